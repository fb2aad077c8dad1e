package store

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeObject: whatever a key holds, decoding either fails or yields an
// object whose own key is that key and whose encoding decodes to the same
// object again; a mirror fed the same bytes keeps the object exactly when it
// decodes.
func FuzzDecodeObject(f *testing.F) {
	f.Add("vms/vm1", []byte(`{"Name":"vm1","Tenant":"t","VNET":"net","MAC":[2,0,0,0,0,1],"CAs":["10.0.0.1"],"Host":"h","Generation":1}`))
	f.Add("hosts/h", []byte(`{"Name":"h","PA":"198.18.0.1"}`))
	f.Add("routes/t/10.0.0.0%2F24", []byte(`{"Tenant":"t","Prefix":"10.0.0.0/24","NextHop":{"Kind":4}}`))
	f.Add("activations/vm1", []byte(`{"VM":"vm1","Generation":2}`))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		obj, kind, err := decodeObject(key, val)
		m := newMirror()
		m.set(key, val, false)
		if err != nil {
			if _, bad := m.bad[key]; !bad && kind >= 0 && len(m.objs[kind]) > 0 {
				t.Fatalf("mirror kept %q that does not decode", key)
			}
			return
		}
		own, k2, err := objectKey(obj)
		if err != nil || own != key || k2 != kind {
			t.Fatalf("decoded %q into an object of key %q (%v)", key, own, err)
		}
		enc, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := decodeObject(key, enc)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		enc2, _ := json.Marshal(again)
		if string(enc) != string(enc2) {
			t.Fatalf("not stable: %s vs %s", enc, enc2)
		}
		if len(m.bad) != 0 || m.objs[kind][key] == nil {
			t.Fatalf("mirror did not keep the decoded %q", key)
		}
	})
}
