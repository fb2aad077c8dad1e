package directory

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nicpath/nicpath/policy"
)

// Location is where a VM runs: its host, the host's provider address and
// the generation of that location.
type Location struct {
	Host       string
	PA         netip.Addr
	Generation uint64
}

// Record is one directory entry: the mapping of customer address CA in the
// VNET with VNI, at Version.
type Record struct {
	VNI     uint32
	CA      netip.Addr
	MAC     policy.MAC
	VM      string
	Tenant  string
	VNET    string
	Version uint64
	// Loc is the VM's own location; Shadow, when its Host is set, the
	// location it is migrating to (installed inactive until an activation
	// selects its generation).
	Loc    Location
	Shadow Location
	// Signer is the public key of the VM manager that signed the record;
	// Sig its ed25519 signature over the encoding up to Sig.
	Signer ed25519.PublicKey
	Sig    []byte
}

// Key names a record in the directory: "/nicpath/VNI/CA".
func Key(vni uint32, ca netip.Addr) string {
	return "/" + Namespace + "/" + strconv.FormatUint(uint64(vni), 10) + "/" + ca.String()
}

// Namespace is the first element of every record's key.
const Namespace = "nicpath"

// ParseKey is the inverse of Key.
func ParseKey(key string) (vni uint32, ca netip.Addr, err error) {
	rest, ok := strings.CutPrefix(key, "/"+Namespace+"/")
	if !ok {
		return 0, ca, fmt.Errorf("directory: key %q not under /%s/", key, Namespace)
	}
	v, a, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, ca, fmt.Errorf("directory: key %q has no address", key)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || strconv.FormatUint(n, 10) != v {
		return 0, ca, fmt.Errorf("directory: key %q: bad VNI", key)
	}
	ca, err = netip.ParseAddr(a)
	if err != nil || ca.String() != a {
		return 0, ca, fmt.Errorf("directory: key %q: bad address", key)
	}
	return uint32(n), ca, nil
}

// Key is the record's key.
func (r Record) Key() string { return Key(r.VNI, r.CA) }

const (
	magic   = "NPD1"
	maxName = 255
)

// Errors of Decode and Verifier.
var (
	ErrMalformed = errors.New("directory: malformed record")
	ErrUnsigned  = errors.New("directory: record not signed")
	ErrBadSig    = errors.New("directory: bad signature")
	ErrSigner    = errors.New("directory: record signed by a key that is not trusted")
	ErrKey       = errors.New("directory: record stored under another key")
)

// body appends the signed part of r's encoding.
func (r *Record) body(b []byte) ([]byte, error) {
	if !r.CA.IsValid() || !r.Loc.PA.IsValid() {
		return nil, fmt.Errorf("%w: no CA or PA", ErrMalformed)
	}
	if r.Shadow.Host != "" && !r.Shadow.PA.IsValid() {
		return nil, fmt.Errorf("%w: shadow without PA", ErrMalformed)
	}
	for _, s := range []string{r.VM, r.Tenant, r.VNET, r.Loc.Host, r.Shadow.Host} {
		if len(s) > maxName {
			return nil, fmt.Errorf("%w: name longer than %d bytes", ErrMalformed, maxName)
		}
	}
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint32(b, r.VNI)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	b = appendAddr(b, r.CA)
	b = append(b, r.MAC[:]...)
	b = appendName(b, r.VM)
	b = appendName(b, r.Tenant)
	b = appendName(b, r.VNET)
	b = appendLoc(b, r.Loc)
	if r.Shadow.Host == "" {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendLoc(b, r.Shadow)
	}
	return b, nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	s := a.AsSlice()
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendName(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

func appendLoc(b []byte, l Location) []byte {
	b = appendName(b, l.Host)
	b = appendAddr(b, l.PA)
	return binary.BigEndian.AppendUint64(b, l.Generation)
}

// Sign sets r.Signer and r.Sig with key and returns the record's encoding.
func Sign(r *Record, key ed25519.PrivateKey) ([]byte, error) {
	r.Signer = key.Public().(ed25519.PublicKey)
	b, err := r.body(nil)
	if err != nil {
		return nil, err
	}
	b = append(b, r.Signer...)
	r.Sig = ed25519.Sign(key, b)
	return append(b, r.Sig...), nil
}

// Encode returns r's encoding with its current signature (Sign makes one).
func (r *Record) Encode() ([]byte, error) {
	if len(r.Signer) != ed25519.PublicKeySize || len(r.Sig) != ed25519.SignatureSize {
		return nil, ErrUnsigned
	}
	b, err := r.body(nil)
	if err != nil {
		return nil, err
	}
	b = append(b, r.Signer...)
	return append(b, r.Sig...), nil
}

type reader struct {
	b   []byte
	bad bool
}

func (d *reader) take(n int) []byte {
	if d.bad || n > len(d.b) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *reader) u8() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *reader) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *reader) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *reader) name() string { return string(d.take(int(d.u8()))) }

func (d *reader) addr() netip.Addr {
	n := int(d.u8())
	if n != 4 && n != 16 {
		d.bad = true
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(d.take(n))
	return a
}

func (d *reader) loc() Location {
	return Location{Host: d.name(), PA: d.addr(), Generation: d.u64()}
}

// Decode parses a record and checks its signature against the key it
// names (whether that key is trusted is Verifier's question). It refuses
// anything malformed, unsigned or wrongly signed.
func Decode(b []byte) (Record, error) {
	var r Record
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return r, fmt.Errorf("%w: no magic", ErrMalformed)
	}
	d := reader{b: b[len(magic):]}
	r.VNI = d.u32()
	r.Version = d.u64()
	r.CA = d.addr()
	copy(r.MAC[:], d.take(6))
	r.VM, r.Tenant, r.VNET = d.name(), d.name(), d.name()
	r.Loc = d.loc()
	switch d.u8() {
	case 0:
	case 1:
		r.Shadow = d.loc()
		if r.Shadow.Host == "" {
			d.bad = true
		}
	default:
		d.bad = true
	}
	if d.bad {
		return Record{}, fmt.Errorf("%w: truncated or bad field", ErrMalformed)
	}
	if len(d.b) == 0 {
		return Record{}, ErrUnsigned
	}
	signed := len(b) - len(d.b) + ed25519.PublicKeySize
	r.Signer = ed25519.PublicKey(d.take(ed25519.PublicKeySize))
	r.Sig = d.take(ed25519.SignatureSize)
	if d.bad || len(d.b) != 0 {
		return Record{}, fmt.Errorf("%w: signature of the wrong length", ErrMalformed)
	}
	if !ed25519.Verify(r.Signer, b[:signed], r.Sig) {
		return Record{}, ErrBadSig
	}
	return r, nil
}

// Verifier checks records against the VM managers' keys a deployment
// trusts.
type Verifier struct {
	Trusted []ed25519.PublicKey
}

// Verify decodes the record stored under key and checks that a trusted key
// signed it and that it is the record of that key.
func (v Verifier) Verify(key string, b []byte) (Record, error) {
	r, err := Decode(b)
	if err != nil {
		return r, err
	}
	trusted := false
	for _, k := range v.Trusted {
		if bytes.Equal(k, r.Signer) {
			trusted = true
			break
		}
	}
	if !trusted {
		return Record{}, ErrSigner
	}
	if key != r.Key() {
		return Record{}, fmt.Errorf("%w: %q holds the record of %q", ErrKey, key, r.Key())
	}
	return r, nil
}

// Select returns the index of the value to keep among vals stored under
// key: the valid record with the highest version, ties broken by the
// greatest encoding, so that every node picks the same one. It fails when
// no value is valid.
func (v Verifier) Select(key string, vals [][]byte) (int, error) {
	best, bestVer := -1, uint64(0)
	for i, b := range vals {
		r, err := v.Verify(key, b)
		if err != nil {
			continue
		}
		if best < 0 || r.Version > bestVer || (r.Version == bestVer && bytes.Compare(b, vals[best]) > 0) {
			best, bestVer = i, r.Version
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("directory: no valid record among %d for %s", len(vals), key)
	}
	return best, nil
}

// Mapping is the record's own location as a policy mapping.
func (r *Record) Mapping() policy.Mapping {
	return policy.Mapping{VNI: r.VNI, CA: r.CA, MAC: r.MAC, PA: r.Loc.PA, Host: r.Loc.Host,
		VM: r.VM, Tenant: r.Tenant, VNET: r.VNET, Generation: r.Loc.Generation}
}
