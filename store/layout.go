package store

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/nicpath/nicpath/policy"
)

// DefaultPrefix is where KVStore keeps its keys unless told otherwise.
const DefaultPrefix = "/nicpath/"

// Object kinds, in the order a state is built (and published: what others
// refer to comes first).
const (
	kindRouterMAC = iota
	kindHost
	kindGateway
	kindTenant
	kindVNET
	kindVM
	kindRoute
	kindACL
	kindGatewayRule
	kindShadow
	kindActivation
	kindRelocated
	numKinds
)

var kindDirs = [numKinds]string{"router_mac", "hosts", "gateways", "tenants", "vnets", "vms",
	"routes", "acls", "gwrules", "shadows", "activations", "relocated"}

const (
	stateDir  = "state/"
	statusDir = "status/"
)

func esc(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// objectKey returns the key (under the state directory) and kind of a
// policy object.
func objectKey(obj any) (string, int, error) {
	k := func(kind int, parts ...string) (string, int, error) {
		if len(parts) == 0 {
			return kindDirs[kind], kind, nil
		}
		return kindDirs[kind] + "/" + esc(parts...), kind, nil
	}
	switch o := obj.(type) {
	case policy.MAC:
		return k(kindRouterMAC)
	case policy.Host:
		return k(kindHost, o.Name)
	case policy.Gateway:
		return k(kindGateway, o.Name)
	case policy.Tenant:
		return k(kindTenant, o.Name)
	case policy.VNET:
		return k(kindVNET, o.Tenant, o.Name)
	case policy.VM:
		return k(kindVM, o.Name)
	case policy.Route:
		return k(kindRoute, o.Tenant, o.Prefix.String())
	case policy.ACL:
		return k(kindACL, o.Tenant, o.ID)
	case policy.GatewayRule:
		return k(kindGatewayRule, o.Tenant, o.Name)
	case policy.Shadow:
		return k(kindShadow, o.VM)
	case policy.Activation:
		return k(kindActivation, o.VM)
	case policy.Relocated:
		return k(kindRelocated, o.Name)
	}
	return "", 0, fmt.Errorf("store: %T is not a policy object", obj)
}

// decodeObject decodes the value of a state key, and checks that the key is
// the object's own (a value stored under another object's key is an error,
// not a silent rename).
func decodeObject(key string, val []byte) (any, int, error) {
	dir, _, _ := strings.Cut(key, "/")
	kind := slices.Index(kindDirs[:], dir)
	if kind < 0 {
		return nil, 0, fmt.Errorf("store: key %q: unknown kind %q", key, dir)
	}
	var obj any
	var err error
	switch kind {
	case kindRouterMAC:
		obj, err = decodeJSON[policy.MAC](val)
	case kindHost:
		obj, err = decodeJSON[policy.Host](val)
	case kindGateway:
		obj, err = decodeJSON[policy.Gateway](val)
	case kindTenant:
		obj, err = decodeJSON[policy.Tenant](val)
	case kindVNET:
		obj, err = decodeJSON[policy.VNET](val)
	case kindVM:
		obj, err = decodeJSON[policy.VM](val)
	case kindRoute:
		obj, err = decodeJSON[policy.Route](val)
	case kindACL:
		obj, err = decodeJSON[policy.ACL](val)
	case kindGatewayRule:
		obj, err = decodeJSON[policy.GatewayRule](val)
	case kindShadow:
		obj, err = decodeJSON[policy.Shadow](val)
	case kindActivation:
		obj, err = decodeJSON[policy.Activation](val)
	case kindRelocated:
		obj, err = decodeJSON[policy.Relocated](val)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: key %q: %w", key, err)
	}
	own, _, err := objectKey(obj)
	if err != nil {
		return nil, 0, err
	}
	if own != key {
		return nil, 0, fmt.Errorf("store: key %q holds the object of key %q", key, own)
	}
	return obj, kind, nil
}

func decodeJSON[T any](val []byte) (T, error) {
	var v T
	err := json.Unmarshal(val, &v)
	return v, err
}

// stateObjects lists every object of st that the layout stores, in build
// order. Implicit routes (subnet and gateway-rule routes) are not objects:
// Build derives them again.
func stateObjects(st *policy.State) []any {
	var out []any
	if st.RouterMAC() != policy.DefaultRouterMAC {
		out = append(out, st.RouterMAC())
	}
	for _, h := range st.Hosts() {
		out = append(out, h)
	}
	for _, g := range st.Gateways() {
		out = append(out, g)
	}
	for _, t := range st.Tenants() {
		out = append(out, t)
	}
	for _, v := range st.VNETs() {
		out = append(out, v)
	}
	for _, v := range st.VMs() {
		if !st.IsRelocatedVM(v.Name) { // compiled from a relocated subnet
			out = append(out, v)
		}
	}
	for _, t := range st.Tenants() {
		for _, r := range st.Routes(t.Name) {
			if r.Origin == policy.RouteExplicit {
				r.Rule = ""
				out = append(out, r)
			}
		}
		for _, a := range st.ACLs(t.Name) {
			out = append(out, a)
		}
		for _, g := range st.GatewayRules(t.Name) {
			out = append(out, g)
		}
	}
	for _, s := range st.Shadows() {
		s.PA = policy.Shadow{}.PA // resolved from the host on Build
		out = append(out, s)
	}
	for _, a := range st.Activations() {
		if vm, ok := st.VM(a.VM); ok && vm.Generation == a.Generation {
			continue // the default: no record
		}
		out = append(out, a)
	}
	for _, r := range st.Relocated() {
		out = append(out, r)
	}
	return out
}

// mirror is the decoded objects of one revision, from which states are
// built. It is owned by one watcher at a time: a Snapshot carries it so a
// watch continues from where Load left off, and a watch works on a copy.
type mirror struct {
	rev  int64
	objs [numKinds]map[string]any
	// bad holds the keys whose values did not decode, with the error: the
	// state cannot be built while any is left.
	bad map[string]error
	st  *policy.State // the state of rev, nil when it did not build
}

func newMirror() *mirror {
	m := &mirror{bad: map[string]error{}}
	for i := range m.objs {
		m.objs[i] = map[string]any{}
	}
	return m
}

// clone copies the maps (not the objects: they are values).
func (m *mirror) clone() *mirror {
	c := &mirror{rev: m.rev, st: m.st, bad: maps.Clone(m.bad)}
	for i := range m.objs {
		c.objs[i] = maps.Clone(m.objs[i])
	}
	return c
}

// set records one key's value (nil: deleted) and returns its kind (-1 for
// a key outside the layout, which is an error of its own).
func (m *mirror) set(key string, val []byte, del bool) int {
	delete(m.bad, key)
	dir, _, _ := strings.Cut(key, "/")
	kind := slices.Index(kindDirs[:], dir)
	if kind >= 0 {
		delete(m.objs[kind], key)
	}
	if del {
		return kind
	}
	obj, k, err := decodeObject(key, val)
	if err != nil {
		m.bad[key] = err
		return kind
	}
	m.objs[k][key] = obj
	return k
}

// build builds the state of the mirror's objects from scratch.
func (m *mirror) build() (*policy.State, error) {
	if len(m.bad) > 0 {
		keys := slices.Sorted(maps.Keys(m.bad))
		return nil, m.bad[keys[0]]
	}
	b := policy.NewBuilder()
	for kind := range numKinds {
		keys := slices.Sorted(maps.Keys(m.objs[kind]))
		for _, k := range keys {
			switch o := m.objs[kind][k].(type) {
			case policy.MAC:
				b.SetRouterMAC(o)
			case policy.Host:
				b.AddHost(o)
			case policy.Gateway:
				b.AddGateway(o)
			case policy.Tenant:
				b.AddTenant(o)
			case policy.VNET:
				b.AddVNET(o)
			case policy.VM:
				b.AddVM(o)
			case policy.Route:
				b.AddRoute(o)
			case policy.ACL:
				b.AddACL(o)
			case policy.GatewayRule:
				b.AddGatewayRule(o)
			case policy.Shadow:
				b.AddShadow(o)
			case policy.Activation:
				b.AddActivation(o)
			case policy.Relocated:
				b.AddRelocated(o)
			}
		}
	}
	return b.Build()
}

// apply moves the mirror to a new revision with the given events (all of
// whole revisions) and builds its state. When the events only touch
// activation records and the previous state built, the new state is the
// previous one with the activations applied (State.Activate): no rebuild,
// and the vswitch sees nothing but the activation.
func (m *mirror) apply(events []KVEvent, prefixLen int) (*policy.State, error) {
	onlyActivations := m.st != nil && len(m.bad) == 0
	var acts []string
	for _, ev := range events {
		key := ev.Key[prefixLen:]
		kind := m.set(key, ev.Value, ev.Delete)
		if kind != kindActivation {
			onlyActivations = false
		} else {
			acts = append(acts, key)
		}
		m.rev = max(m.rev, ev.Revision)
	}
	if onlyActivations && len(m.bad) == 0 {
		st := m.st
		var err error
		for _, key := range acts {
			if o, ok := m.objs[kindActivation][key].(policy.Activation); ok {
				st, err = st.Activate(o.VM, o.Generation)
			} else {
				vm, _ := url.PathUnescape(strings.TrimPrefix(key, kindDirs[kindActivation]+"/"))
				v, ok := st.VM(vm)
				if !ok {
					err = fmt.Errorf("store: activation of unknown VM %q removed", vm)
					break
				}
				st, err = st.Activate(vm, cmp.Or(v.Generation, 1))
			}
			if err != nil {
				break
			}
		}
		if err == nil {
			m.st = st
			return st, nil
		}
		// Fall back to a full build, which reports the problem with its
		// field.
	}
	st, err := m.build()
	m.st = st
	return st, err
}
