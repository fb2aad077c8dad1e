package directory_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/nicpath/nicpath/directory"
)

// memDir is the smallest directory: signed records by key, in memory. It
// is a Publisher (what the VM manager writes to) and a Resolver (what a
// host asks), and it checks every record it hands out with a Verifier, as
// a distributed directory (directory/dht) does.
type memDir struct {
	v    directory.Verifier
	mu   sync.Mutex
	recs map[string][]byte
}

func (d *memDir) Publish(_ context.Context, recs []directory.Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		b, err := r.Encode()
		if err != nil {
			return err
		}
		d.recs[r.Key()] = b
	}
	return nil
}

func (d *memDir) Resolve(_ context.Context, vni uint32, ca netip.Addr) (directory.Record, error) {
	key := directory.Key(vni, ca)
	d.mu.Lock()
	b, ok := d.recs[key]
	d.mu.Unlock()
	if !ok {
		return directory.Record{}, directory.ErrNotFound
	}
	return d.v.Verify(key, b)
}

// The VM manager signs a VM's record and publishes it; a host resolves the
// VM's customer address through a Cache on a miss, and the second lookup
// is answered from the cache.
func Example() {
	ctx := context.Background()
	pub, manager, _ := ed25519.GenerateKey(nil)
	dir := &memDir{v: directory.Verifier{Trusted: []ed25519.PublicKey{pub}}, recs: map[string][]byte{}}

	// The VM manager's side.
	r := directory.Record{
		VNI: 100, CA: netip.MustParseAddr("10.0.0.5"), MAC: [6]byte{2, 0, 0, 0, 0, 5},
		VM: "vm5", Tenant: "acme", VNET: "blue", Version: directory.Version(1, false),
		Loc: directory.Location{Host: "host-a", PA: netip.MustParseAddr("198.18.0.1"), Generation: 1},
	}
	if _, err := directory.Sign(&r, manager); err != nil {
		fmt.Println(err)
		return
	}
	if err := dir.Publish(ctx, []directory.Record{r}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("published", r.Key())

	// A host's side.
	cache := directory.NewCache(dir, directory.CacheConfig{})
	d := directory.Dest{VNI: 100, CA: netip.MustParseAddr("10.0.0.5")}
	e := cache.Resolve(ctx, d)
	m := e.Record.Mapping()
	fmt.Println("resolved", m.CA, "on", m.Host, "at", m.PA, "version", e.Record.Version, e.Err)
	cache.Resolve(ctx, d)
	miss := cache.Resolve(ctx, directory.Dest{VNI: 100, CA: netip.MustParseAddr("10.0.0.9")})
	fmt.Println("10.0.0.9:", errors.Is(miss.Err, directory.ErrNotFound))
	st := cache.Stats()
	fmt.Println("lookups", st.Lookups, "hits", st.Hits, "not found", st.NotFound)
	// Output:
	// published /nicpath/100/10.0.0.5
	// resolved 10.0.0.5 on host-a at 198.18.0.1 version 4 <nil>
	// 10.0.0.9: true
	// lookups 2 hits 1 not found 1
}

// A record whose signer the deployment does not trust is refused, as is a
// record stored under another address's key.
func ExampleVerifier_Verify() {
	trustedPub, trusted, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)
	v := directory.Verifier{Trusted: []ed25519.PublicKey{trustedPub}}
	r := directory.Record{VNI: 100, CA: netip.MustParseAddr("10.0.0.5"), VM: "vm5", Version: 4,
		Loc: directory.Location{Host: "host-a", PA: netip.MustParseAddr("198.18.0.1"), Generation: 1}}

	good, _ := directory.Sign(&r, trusted)
	got, err := v.Verify(r.Key(), good)
	fmt.Println(got.VM, err)
	_, err = v.Verify(directory.Key(100, netip.MustParseAddr("10.0.0.6")), good)
	fmt.Println(errors.Is(err, directory.ErrKey))
	forged, _ := directory.Sign(&r, stranger)
	_, err = v.Verify(r.Key(), forged)
	fmt.Println(errors.Is(err, directory.ErrSigner))
	// Output:
	// vm5 <nil>
	// true
	// true
}
