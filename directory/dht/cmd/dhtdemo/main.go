// Command dhtdemo is the demo's DIRECTORY=dht story (make demo
// DIRECTORY=dht), in one process on loopback: twenty DHT nodes form a
// private network, the VM manager publishes every VM's signed mapping
// record through one of them, and three simulated hosts (vswitch on the
// software NIC) run with their own VMs and the policy only: every other
// destination is resolved on its first packet through the host's DHT
// node. A VM migrates while traffic flows; then a third of the nodes leave
// and lookups go on; a forged record is refused.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/dht"
	"github.com/nicpath/nicpath/directory/ondemand"
	"github.com/nicpath/nicpath/directory/ondemand/ondemandtest"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/store"
	"github.com/nicpath/nicpath/store/migrate"
	"github.com/nicpath/nicpath/store/storetest"
	"github.com/nicpath/nicpath/vswitch/vswitchtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dhtdemo:", err)
		os.Exit(1)
	}
}

func title(f string, a ...any) { fmt.Printf("\n== "+f+"\n", a...) }
func say(f string, a ...any)   { fmt.Printf("   "+f+"\n", a...) }

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const nodes = 20
	_, mgrKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	title("A private DHT of %d nodes on loopback (protocol /nicpath, server mode, pinned peer IDs; TCP and QUIC, Noise and TLS)", nodes)
	keys := make([]crypto.PrivKey, nodes)
	ids := make([]peer.ID, nodes)
	for i := range keys {
		if keys[i], _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
			return err
		}
		ids[i], _ = peer.IDFromPrivateKey(keys[i])
	}
	ns := make([]*dht.Node, nodes)
	defer func() {
		for _, n := range ns {
			if n != nil {
				n.Close()
			}
		}
	}()
	for i := range ns {
		cfg := dht.Config{Key: keys[i], Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
			Peers: ids, Trusted: []ed25519.PublicKey{mgrKey.Public().(ed25519.PublicKey)}}
		for j := 0; j < i && j < 3; j++ {
			cfg.Bootstrap = append(cfg.Bootstrap, ns[j].AddrInfo())
		}
		if ns[i], err = dht.New(ctx, cfg); err != nil {
			return err
		}
		if err := ns[i].Join(ctx); err != nil {
			return err
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, n := range ns {
		n.DHT.RefreshRoutingTable()
	}
	time.Sleep(500 * time.Millisecond)
	say("node 0 is %s, %d peers connected", ns[0].Host.ID(), len(ns[0].Peers()))

	st := storetest.ThreeHosts(9)
	s := store.NewKV(store.NewMemory(), "")
	m := migrate.New(s, nil)
	m.SetDirectory(ns[0], mgrKey)
	title("The VM manager publishes the state to the store and %d signed records to the DHT", st.MappingCount())
	if _, err := m.Publish(ctx, st); err != nil {
		return err
	}
	nodeOf := map[string]int{"host-a": 1, "host-b": 2, "host-c": 3}
	bed, err := ondemandtest.New(ctx, st, func(h string) directory.Resolver { return ns[nodeOf[h]] },
		ondemand.Config{Cache: directory.CacheConfig{TTL: 500 * time.Millisecond, Timeout: 3 * time.Second}})
	if err != nil {
		return err
	}
	defer bed.Close()
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	for _, h := range storetest.Hosts {
		f := store.NewFollower(store.FollowerConfig{Store: s, Host: h.Name, Target: bed.Layers[h.Name],
			Heartbeat: 50 * time.Millisecond, Retry: 10 * time.Millisecond})
		go f.Run(fctx)
		local, _ := ondemand.Local(st, h.Name)
		say("%s runs %d VMs and knows %d mappings of %d", h.Name, len(st.LocalVMs(h.Name)), local.MappingCount(), st.MappingCount())
	}

	send := func(from, fromVM, to string, port uint16) []vswitchtest.Delivery {
		ds, err := bed.Send(ctx, from, fromVM, ondemandtest.Frame(st, fromVM, to, port, "demo"))
		if err != nil {
			say("send: %v", err)
		}
		return ds
	}
	where := func(ds []vswitchtest.Delivery) string {
		if len(ds) == 0 {
			return "nowhere"
		}
		return ds[0].Host.Name + "/" + ds[0].VM
	}
	title("First packets: each waits for its lookup, then is walked as usual")
	mover, _ := st.VM("mover")
	for i := range 2 {
		start := time.Now()
		ds := send("host-b", "bystander", "mover", uint16(1000+i))
		say("bystander -> mover: landed on %s in %v", where(ds), time.Since(start).Round(time.Microsecond))
	}
	say("host-b explains: %s", bed.Layers["host-b"].Explain(5001, mover.CAs[0]))

	title("The mover migrates from host-a to host-c while host-b streams to it")
	done := make(chan error, 1)
	go func() {
		mig, err := m.Migrate(ctx, "mover", "host-c", migrate.Options{InstallTimeout: time.Minute, ActivateTimeout: time.Minute})
		if err == nil {
			say("migration: generation %d, shadow installed everywhere in %v, activated everywhere in %v", mig.Generation, mig.Install.Round(time.Millisecond), mig.Activate.Round(time.Millisecond))
		}
		done <- err
	}()
	counts, misdelivered := map[string]int{}, 0
	for i, finished := 0, false; !finished || i%50 != 0; i++ {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			finished = true
		default:
		}
		ds := send("host-b", "bystander", "mover", uint16(2000+i%100))
		for _, d := range ds {
			if d.VM != "mover" {
				misdelivered++
			}
		}
		counts[where(ds)]++
		if i%20 == 0 {
			bed.Layers["host-b"].Revalidate(ctx)
		}
		time.Sleep(2 * time.Millisecond)
	}
	say("landed: %v; misdelivered: %d", counts, misdelivered)
	time.Sleep(600 * time.Millisecond)
	bed.Layers["host-b"].Revalidate(ctx)
	say("host-b explains: %s", bed.Layers["host-b"].Explain(5001, mover.CAs[0]))

	title("A third of the nodes leave; lookups go on")
	for _, i := range []int{0, 4, 5, 7, 9, 11, 13} {
		ns[i].Close()
		ns[i] = nil
	}
	ok, total := 0, 0
	for i := range 9 {
		to := fmt.Sprintf("vm-%d", i)
		v, _ := st.VM(to)
		if v.Host == "host-b" {
			continue
		}
		total++
		start := time.Now()
		ds, _ := bed.Send(ctx, "host-b", "bystander", ondemandtest.FrameTo(mustVM(st, "bystander"), v.CAs[0], hal.MAC(v.MAC), 4000, "after"))
		if len(ds) == 1 && ds[0].VM == to {
			ok++
		}
		say("bystander -> %s: %s in %v", to, where(ds), time.Since(start).Round(time.Microsecond))
	}
	say("%d of %d destinations resolved with 13 of 20 nodes", ok, total)

	title("A forged record (signed by a key the deployment does not trust) is refused")
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	r := directory.Record{VNI: 5001, CA: mover.CAs[0], MAC: mover.MAC, VM: "mover", Tenant: "t", VNET: "net", Version: 1 << 40,
		Loc: directory.Location{Host: "host-a", PA: netip.MustParseAddr("203.0.113.66"), Generation: 9}}
	if _, err := directory.Sign(&r, forger); err != nil {
		return err
	}
	err = ns[2].Publish(ctx, []directory.Record{r})
	say("publish: %v", err)
	st2 := bed.Layers["host-b"].Stats()
	say("host-b: %d packets held, %d released, %d dropped (queue full %d, timeout %d), %d lookups", st2.Held, st2.Released,
		st2.DroppedQueueFull+st2.DroppedTimeout+st2.DroppedError, st2.DroppedQueueFull, st2.DroppedTimeout, st2.Cache.Lookups)
	if misdelivered != 0 || ok != total || err == nil {
		return fmt.Errorf("the story went wrong")
	}
	return nil
}

func mustVM(st *policy.State, name string) policy.VM {
	v, _ := st.VM(name)
	return v
}
