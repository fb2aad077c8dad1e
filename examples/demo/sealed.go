package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealtest"
	"github.com/nicpath/nicpath/vswitch"
)

// The sealed step has its own small tenant (green, without ACLs: sealed
// routes exist where the walk's verdict holds for every packet of a pair)
// on a host whose softnic opens sealed frames; green-1 seals every
// destination it talks to.
const sealedPolicy = `hosts:
  - name: host-a
    pa: 198.19.0.1
  - name: host-b
    pa: 198.19.0.2
tenants:
` + sealedTenant

// exceptionTap keeps what the NIC hands the host: the sealed step checks
// it on the bytes.
type exceptionTap struct {
	hal.NIC
	hal.SealedAddresses
	mu     sync.Mutex
	frames [][]byte
}

func (e *exceptionTap) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	n, err := e.NIC.ReadExceptions(ctx, batch)
	e.mu.Lock()
	for i := 0; i < n; i++ {
		e.frames = append(e.frames, bytes.Clone(batch[i].Frame()))
	}
	e.mu.Unlock()
	return n, err
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// sealedStory: green-1 talks to green-2 (local) and green-3 (remote) over
// IPv4 and IPv6 with sealed destinations and gets the replies; then the
// same frames on a NIC without crypto are dropped (fail closed).
func sealedStory(s *story) error {
	s.title("Sealed addresses: green-1 hides its destinations from host-a (its NIC opens them)")
	vmPub, vmPriv, err := securechan.GenerateKey(nil)
	if err != nil {
		return err
	}
	st, err := policy.Parse("sealed.yaml", []byte(fmt.Sprintf(sealedPolicy, hex.EncodeToString(vmPub[:]))))
	if err != nil {
		return err
	}
	g1, g2, g3 := hal.MustMAC("02:00:00:0c:00:01"), hal.MustMAC("02:00:00:0c:00:02"), hal.MustMAC("02:00:00:0c:00:03")
	upMAC := hal.MustMAC("02:00:00:00:ff:30")
	open := func(crypto bool) (*softnic.NIC, *vswitch.Switch, *exceptionTap, *logBuffer, error) {
		nic, err := softnic.New(softnic.Config{Device: "host-a", Crypto: crypto, Ports: []softnic.PortConfig{
			{Name: "green-1", Kind: hal.PortVPort, MAC: g1}, {Name: "green-2", Kind: hal.PortVPort, MAC: g2},
			{Name: "uplink", Kind: hal.PortUplink, MAC: upMAC, MTU: 1600}}})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		tap := &exceptionTap{NIC: nic, SealedAddresses: nic}
		logs := &logBuffer{}
		sw, err := vswitch.New(vswitch.Config{NIC: tap, Host: "host-a", State: st, Uplink: 3, NextHopMAC: g3,
			Ports:  map[string]hal.PortID{"green-1": 1, "green-2": 2},
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err != nil {
			nic.Close()
			return nil, nil, nil, nil, err
		}
		return nic, sw, tap, logs, nil
	}
	nic, sw, tap, logs, err := open(true)
	if err != nil {
		return err
	}
	defer nic.Close()
	defer sw.Close()
	// The agent's part: the VM's key from the policy, registered.
	v, _ := st.VM("green-1")
	if err := nic.RegisterSealKey(context.Background(), 1, v.SealKeys[0].ID, v.SealKeys[0].Public); err != nil {
		return err
	}
	nicKey := nic.SealPublicKey()
	s.say("green-1's public key is in the policy (seal_keys, id 1); the agent registered it with the NIC")
	s.say("the NIC's public key, which vswitchd publishes for the VM: %x", nicKey)
	s.check(sw.Stats().SealedRoutes == 4, "host-a's vswitch walked the policy ahead and pushed %d sealed routes (green-2, green-3; IPv4, IPv6)", sw.Stats().SealedRoutes)

	sealer, err := securechan.NewSealer(vmPriv, nicKey, 1, nil)
	if err != nil {
		return err
	}
	type dest struct {
		name     string
		mac      hal.MAC
		src, dst netip.Addr
	}
	dests := []dest{
		{"green-2", g2, netip.MustParseAddr("198.18.30.1"), netip.MustParseAddr("198.18.30.2")},
		{"green-2", g2, netip.MustParseAddr("2001:db8:30::1"), netip.MustParseAddr("2001:db8:30::2")},
		{"green-3", g3, netip.MustParseAddr("198.18.30.1"), netip.MustParseAddr("198.18.30.3")},
		{"green-3", g3, netip.MustParseAddr("2001:db8:30::1"), netip.MustParseAddr("2001:db8:30::3")},
	}
	var secrets []sealtest.Secret
	var sealed [][]byte
	p1, _ := nic.Port(1)
	p2, _ := nic.Port(2)
	up, _ := nic.Port(3)
	recv := func(p *softnic.Port) [][]byte {
		bufs, sizes := [][]byte{make([]byte, 2048), make([]byte, 2048)}, []int{0, 0}
		n, _ := p.Recv(bufs, sizes)
		var out [][]byte
		for i := 0; i < n; i++ {
			out = append(out, bytes.Clone(bufs[i][:sizes[i]]))
		}
		return out
	}
	for _, d := range dests {
		secrets = append(secrets, sealtest.Secret{IP: d.dst})
		clearF := wire.Build(wire.FrameSpec{SrcMAC: g1, DstMAC: securechan.SealedDstMAC, Src: d.src, Dst: d.dst, Proto: hal.ProtoUDP,
			SrcPort: 40000, DstPort: 7, Payload: []byte("sealed hello")})
		f, err := sealer.SealFrame(nil, clearF)
		if err != nil {
			return err
		}
		sealed = append(sealed, f)
		if _, err := p1.Send([][]byte{f}); err != nil {
			return err
		}
		reply := wire.Build(wire.FrameSpec{SrcMAC: d.mac, DstMAC: g1, Src: d.dst, Dst: d.src, Proto: hal.ProtoUDP,
			SrcPort: 7, DstPort: 40000, Payload: []byte("echo")})
		var got [][]byte
		if d.name == "green-2" {
			got = recv(p2)
			if _, err := p2.Send([][]byte{reply}); err != nil {
				return err
			}
		} else {
			got = recv(up)
			tun := wire.BuildEncap(&hal.Encap{Kind: hal.EncapVXLAN, VNI: 3001, Src: netip.MustParseAddr("198.19.0.2"),
				Dst: netip.MustParseAddr("198.19.0.1"), SrcMAC: g3, DstMAC: upMAC}, reply)
			if _, err := up.Send([][]byte{tun}); err != nil {
				return err
			}
		}
		var k hal.FlowKey
		var l wire.Layout
		ok := len(got) == 1 && wire.Parse(got[0], 0, &k, &l) == nil && k.Dst() == d.dst && k.EthDst == d.mac
		s.check(ok, "sealed UDP green-1 → %s (%v) opened by the NIC and delivered (%d frame)", d.name, d.dst, len(got))
		back := recv(p1)
		s.check(len(back) == 1 && bytes.Equal(back[0], reply), "%s's reply reached green-1, forwarded by the NIC", d.name)
	}
	ss := nic.SealedStats()
	s.say("NIC: %d sealed frames opened, %d routed, %d replies forwarded", ss.Opened, ss.Routed, ss.Replied)
	tap.mu.Lock()
	exc := len(tap.frames)
	view := map[string][]byte{"exception path": bytes.Join(tap.frames, nil)}
	tap.mu.Unlock()
	view["vswitch logs"] = logs.b.Bytes()
	expl := sw.ExplainFrame(1, sealed[0]).String()
	view["explain"] = []byte(expl + fmt.Sprintf("%+v %+v", sw.Stats(), sw.Flows()))
	s.check(exc == 0 && len(sw.Flows()) == 0, "host-a's vswitch saw none of it: %d exceptions, %d flows", exc, len(sw.Flows()))
	leaks := 0
	for where, data := range view {
		for _, sec := range secrets {
			if l := sealtest.FindLeak(data, sec); l != "" {
				leaks++
				s.say("   LEAK: %s shows %v: %s", where, sec.IP, l)
			}
		}
	}
	s.check(leaks == 0, "neither the exception path, the logs nor explain hold a sealed destination (checked on the bytes)")
	s.say("   host-a's explain of a sealed frame:")
	s.say("%s", indent(expl, "     "))

	// The same on a NIC without crypto: dropped, counted, never opened.
	nic0, sw0, _, _, err := open(false)
	if err != nil {
		return err
	}
	defer nic0.Close()
	defer sw0.Close()
	q1, _ := nic0.Port(1)
	if _, err := q1.Send(sealed); err != nil {
		return err
	}
	st0, err := nic0.Stats(context.Background())
	if err != nil {
		return err
	}
	e0 := sw0.ExplainFrame(1, sealed[0]).String()
	s.check(st0.Drops[hal.ReasonSealed] == uint64(len(sealed)) && strings.Contains(e0, "fail closed"),
		"on a NIC without crypto the %d sealed frames are dropped and counted (fail closed), never opened", len(sealed))
	return nil
}
