package policy_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/policy"
)

const sealKeyA = "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
const sealKeyB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"

func sealPolicy(keys string) string {
	return `hosts:
  - name: h1
    pa: 198.19.0.1
tenants:
  - name: t
    vnets:
      - name: v
        vni: 7
        subnets: [198.18.0.0/24]
        vms:
          - name: a
            mac: 02:00:00:00:00:01
            ca: 198.18.0.1
            host: h1
` + keys
}

func TestSealKeys(t *testing.T) {
	st, err := policy.Parse("p.yaml", []byte(sealPolicy(`            seal_keys:
              - id: 1
                public: `+sealKeyA+`
              - id: 2
                public: `+sealKeyB+`
`)))
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := st.VM("a")
	if len(vm.SealKeys) != 2 || vm.SealKeys[0].ID != 1 || vm.SealKeys[1].ID != 2 || vm.SealKeys[0].Public[0] != 0x8f || vm.SealKeys[1].Public[31] != 0x4f {
		t.Fatalf("seal keys %+v", vm.SealKeys)
	}
	// Written back and read again: the same keys.
	out, err := policy.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.NewBuffer(out)
	st2, err := policy.Parse("again.yaml", b.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if vm2, _ := st2.VM("a"); len(vm2.SealKeys) != 2 || vm2.SealKeys[1] != vm.SealKeys[1] {
		t.Fatalf("after a round trip: %+v", vm2.SealKeys)
	}
	// A file read through the streaming loader keeps them too.
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	st3, err := policy.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if vm3, _ := st3.VM("a"); len(vm3.SealKeys) != 2 || vm3.SealKeys[0] != vm.SealKeys[0] {
		t.Fatalf("from a file: %+v", vm3.SealKeys)
	}
}

func TestSealKeysErrors(t *testing.T) {
	for _, c := range []struct {
		name, keys, line, field, msg string
	}{
		{"bad hex", "            seal_keys:\n              - id: 1\n                public: zz\n", ":17:", "seal_keys[0].public", "64 hex digits"},
		{"short", "            seal_keys:\n              - id: 1\n                public: abcd\n", ":17:", "seal_keys[0].public", "64 hex digits"},
		{"zero", "            seal_keys:\n              - id: 1\n                public: " + strings.Repeat("0", 64) + "\n", ":17:", "seal_keys[0].public", "all-zero"},
		{"id range", "            seal_keys:\n              - id: 256\n                public: " + sealKeyA + "\n", ":16:", "seal_keys[0].id", "0..255"},
		{"twice", "            seal_keys:\n              - id: 3\n                public: " + sealKeyA + "\n              - id: 3\n                public: " + sealKeyB + "\n", ":18:", "seal_keys[1].id", "given twice"},
		{"three", "            seal_keys:\n              - {id: 1, public: " + sealKeyA + "}\n              - {id: 2, public: " + sealKeyB + "}\n              - {id: 3, public: " + sealKeyB + "}\n", ":16:", "seal_keys", "at most 2"},
		{"no public", "            seal_keys:\n              - id: 1\n", ":16:", "seal_keys[0].public", "missing"},
		{"unknown field", "            seal_keys:\n              - id: 1\n                public: " + sealKeyA + "\n                private: x\n", ":18:", "seal_keys[0].private", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := policy.Parse("keys.yaml", []byte(sealPolicy(c.keys)))
			if err == nil {
				t.Fatal("accepted")
			}
			var le *policy.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("not a LoadError: %v", err)
			}
			s := err.Error()
			if !strings.Contains(s, "keys.yaml"+c.line) || !strings.Contains(s, c.field) || !strings.Contains(s, c.msg) {
				t.Fatalf("error %q: want file keys.yaml, line %s, field %s, %q", s, c.line, c.field, c.msg)
			}
		})
	}
}

// TestSealKeysBuilder: the Go API is checked too.
func TestSealKeysBuilder(t *testing.T) {
	b, err := policy.ParseBuilder("p.yaml", []byte(sealPolicy("")))
	if err != nil {
		t.Fatal(err)
	}
	b.AddVM(policy.VM{Name: "b", Tenant: "t", VNET: "v", MAC: policy.MAC{2, 0, 0, 0, 0, 2}, Host: "h1",
		CAs: nil, SealKeys: []policy.SealKey{{ID: 1, Public: [32]byte{1}}, {ID: 1, Public: [32]byte{}}}})
	_, err = b.Build()
	if err == nil || !strings.Contains(err.Error(), "seal_keys[1].id") || !strings.Contains(err.Error(), "seal_keys[1].public") {
		t.Fatalf("Build: %v", err)
	}
}
