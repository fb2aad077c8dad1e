package importcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// modulePackages lists the module's packages with go list, paths made
// relative to the module.
func modulePackages(t *testing.T) []Package {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Deps,Module,Error", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type listed struct {
		ImportPath string
		Imports    []string
		Deps       []string
		Module     *struct{ Path string }
		Error      *struct{ Err string }
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if l.Error != nil {
			t.Fatalf("go list: %s: %s", l.ImportPath, l.Error.Err)
		}
		if l.Module == nil {
			t.Fatalf("go list: %s is in no module", l.ImportPath)
		}
		mod := l.Module.Path
		rel := func(paths []string) []string {
			var out []string
			for _, p := range paths {
				if p == mod || strings.HasPrefix(p, mod+"/") {
					out = append(out, strings.TrimPrefix(strings.TrimPrefix(p, mod), "/"))
				}
			}
			return out
		}
		pkgs = append(pkgs, Package{Path: rel([]string{l.ImportPath})[0], Imports: rel(l.Imports), Deps: rel(l.Deps)})
	}
	return pkgs
}

// The module keeps its import rules.
func TestModuleImportRules(t *testing.T) {
	pkgs := modulePackages(t)
	if len(pkgs) < 20 || !slices.ContainsFunc(pkgs, func(p Package) bool { return p.Path == "hal" }) {
		t.Fatalf("go list found %d packages, hal among them: %v; the check would see nothing", len(pkgs), pkgs)
	}
	broken, stale := Check(pkgs, Rules(ExamplesInternal, InternalExceptions), append(slices.Clone(ExamplesInternal), InternalExceptions...))
	for _, b := range broken {
		t.Errorf("%s", b)
	}
	for _, s := range stale {
		t.Errorf("ExamplesInternal or InternalExceptions lists %v, which the code no longer imports: remove it", s)
	}
}

// The checker catches each kind of broken rule.
func TestCheckCatchesBrokenRules(t *testing.T) {
	good := []Package{
		{Path: "hal"},
		{Path: "hal/wire", Imports: []string{"hal"}, Deps: []string{"hal"}},
		{Path: "internal/afpacket"},
		{Path: "drivers/xdp", Imports: []string{"hal", "internal/afpacket"}, Deps: []string{"hal", "internal/afpacket"}},
		{Path: "policy"},
		{Path: "vswitch", Imports: []string{"hal", "policy"}, Deps: []string{"hal", "policy"}},
		{Path: "conformance", Imports: []string{"hal", "hal/wire"}, Deps: []string{"hal", "hal/wire"}},
		{Path: "conformance/internal/targets", Imports: []string{"conformance", "drivers/xdp"}, Deps: []string{"conformance", "drivers/xdp", "hal", "hal/wire", "internal/afpacket"}},
		{Path: "examples/demo", Imports: []string{"vswitch", "internal/simfabric"}, Deps: []string{"vswitch", "hal", "policy", "internal/simfabric"}},
		{Path: "internal/simfabric", Imports: []string{"vswitch"}, Deps: []string{"vswitch", "hal", "policy"}},
		{Path: "control"},
		{Path: "hal/haltest", Imports: []string{"hal"}, Deps: []string{"hal"}},
		{Path: "agent/driver", Imports: []string{"hal"}, Deps: []string{"hal"}},
	}
	allow := []Pair{{"examples/demo", "internal/simfabric"}}
	internal := []Pair{{"internal/simfabric", "vswitch"}}
	exceptions := append(slices.Clone(allow), internal...)
	if broken, stale := Check(good, Rules(allow, internal), exceptions); len(broken) != 0 || len(stale) != 0 {
		t.Fatalf("a graph that keeps the rules: broken %q, stale %v", broken, stale)
	}

	with := func(pkg string, deps ...string) []Package {
		out := slices.Clone(good)
		for i := range out {
			if out[i].Path == pkg {
				out[i].Imports = append(slices.Clone(out[i].Imports), deps[0])
				out[i].Deps = append(slices.Clone(out[i].Deps), deps...)
			}
		}
		return out
	}
	cases := []struct {
		name  string
		pkgs  []Package
		allow []Pair // exceptions of examples/
		intl  []Pair // exceptions of internal/
		want  string // in the one broken rule
		stale []Pair
	}{
		{"internal imports a driver", with("internal/simfabric", "drivers/xdp", "internal/afpacket"), allow, internal, "internal/simfabric depends on drivers/xdp", nil},
		{"internal imports vswitch, unlisted", with("internal/afpacket", "vswitch", "hal", "policy"), allow, internal, "internal/ imports no driver and no vswitch (only as listed in InternalExceptions): internal/afpacket depends on vswitch", nil},
		{"an internal exception no longer needed", good, allow, append(slices.Clone(internal), Pair{"internal/simfabric", "drivers/softnic"}), "", []Pair{{"internal/simfabric", "drivers/softnic"}}},
		{"control imports hal", with("control", "hal"), allow, internal, "control imports nothing of nicpath's", nil},
		{"haltest imports a driver", with("hal/haltest", "drivers/xdp", "internal/afpacket"), allow, internal, "hal/haltest and agent/driver import only hal: hal/haltest depends on drivers/xdp", nil},
		{"the registry imports vswitch", with("agent/driver", "vswitch", "policy"), allow, internal, "agent/driver depends on vswitch", nil},
		{"hal imports wire", with("hal", "hal/wire"), allow, internal, "hal imports nothing", nil},
		{"wire imports policy", with("hal/wire", "policy"), allow, internal, "hal/wire imports only hal", nil},
		{"driver reaches policy through internal", with("drivers/xdp", "internal/simfabric", "vswitch", "policy"), allow, internal, "drivers/xdp depends on policy", nil},
		{"policy imports vswitch", with("policy", "vswitch"), allow, internal, "policy never depends on vswitch: policy depends on vswitch", nil},
		{"conformance imports a driver", with("conformance", "drivers/xdp"), allow, internal, "conformance reaches drivers only", nil},
		{"an example imports internal", with("examples/demo", "internal/afpacket"), allow, internal, "examples/demo depends on internal/afpacket", nil},
		{"an exception no longer needed", good, append(slices.Clone(allow), Pair{"examples/demo", "internal/nsexec"}), internal, "", []Pair{{"examples/demo", "internal/nsexec"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken, stale := Check(c.pkgs, Rules(c.allow, c.intl), append(slices.Clone(c.allow), c.intl...))
			if c.want == "" {
				if len(broken) != 0 {
					t.Errorf("broken %q, want none", broken)
				}
			} else if !slices.ContainsFunc(broken, func(b string) bool { return strings.Contains(b, c.want) }) {
				t.Errorf("broken %q; want one containing %q", broken, c.want)
			}
			if !slices.Equal(stale, c.stale) {
				t.Errorf("stale %v, want %v", stale, c.stale)
			}
		})
	}
}
