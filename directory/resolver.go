package directory

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nicpath/nicpath/policy"
)

// ErrNotFound: the directory holds no record for the address.
var ErrNotFound = errors.New("directory: no mapping")

// Resolver answers which record maps a customer address of a VNET.
// Implementations return ErrNotFound (possibly wrapped) for an address
// nobody published, and honour ctx's deadline.
type Resolver interface {
	Resolve(ctx context.Context, vni uint32, ca netip.Addr) (Record, error)
}

// Publisher stores signed records (see Sign) where resolvers find them.
type Publisher interface {
	Publish(ctx context.Context, recs []Record) error
}

// StateResolver resolves from a policy state: the replicated model, where
// every host holds every mapping.
type StateResolver struct{ State *policy.State }

// Resolve implements Resolver.
func (s StateResolver) Resolve(_ context.Context, vni uint32, ca netip.Addr) (Record, error) {
	m, ok := s.State.Lookup(vni, ca)
	if !ok {
		return Record{}, ErrNotFound
	}
	rs := RecordsOf(s.State, m.VM)
	for _, r := range rs {
		if r.VNI == vni && r.CA == ca {
			return r, nil
		}
	}
	return Record{}, ErrNotFound
}

// Version is a record's version for a VM at generation gen (zero means 1),
// with or without a shadow: every step of a migration (shadow published,
// shadow abandoned, new location made the VM's own) publishes a higher
// version than the one before, and a manager that restarts computes the same
// versions again from the state.
func Version(gen uint64, shadow bool) uint64 {
	v := max(gen, 1) * 4
	if shadow {
		v++
	}
	return v
}

// RecordsOf returns the unsigned records of vm in st, one per customer
// address, with its shadow if it has one.
func RecordsOf(st *policy.State, vm string) []Record {
	v, ok := st.VM(vm)
	if !ok {
		return nil
	}
	h, ok := st.Host(v.Host)
	if !ok {
		return nil
	}
	vn, ok := st.VNET(v.Tenant, v.VNET)
	if !ok {
		return nil
	}
	base := Record{VNI: vn.VNI, MAC: v.MAC, VM: v.Name, Tenant: v.Tenant, VNET: v.VNET,
		Loc: Location{Host: v.Host, PA: h.PA, Generation: max(v.Generation, 1)}}
	if sh, ok := st.Shadow(vm); ok {
		if sp, ok := st.Host(sh.Host); ok {
			base.Shadow = Location{Host: sh.Host, PA: sp.PA, Generation: sh.Generation}
		}
	}
	base.Version = Version(base.Loc.Generation, base.Shadow.Host != "")
	out := make([]Record, 0, len(v.CAs))
	for _, ca := range v.CAs {
		r := base
		r.CA = ca
		out = append(out, r)
	}
	return out
}

// PublishVM signs vm's records in st with key and publishes them.
func PublishVM(ctx context.Context, p Publisher, key ed25519.PrivateKey, st *policy.State, vm string) error {
	rs := RecordsOf(st, vm)
	if len(rs) == 0 {
		return fmt.Errorf("directory: no records for VM %q", vm)
	}
	for i := range rs {
		if _, err := Sign(&rs[i], key); err != nil {
			return err
		}
	}
	return p.Publish(ctx, rs)
}
