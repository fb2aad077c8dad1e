package directory

import (
	"bytes"
	"testing"
)

// FuzzDecode: whatever bytes a DHT node is handed, Decode either refuses
// them or returns a record whose encoding is exactly those bytes (so a
// valid record has one encoding, and its signature covers all of it).
func FuzzDecode(f *testing.F) {
	k := testKey(1)
	r := sample()
	b, _ := Sign(&r, k)
	f.Add(b)
	r.Shadow = Location{}
	b, _ = Sign(&r, k)
	f.Add(b)
	f.Add([]byte("NPD1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		out, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, out)
		}
	})
}
