package policy

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// sameTree says where two trees differ in what the decoder reads of them
// (kind, value, line, column, children), or "".
func sameTree(a, b *yaml.Node, path string) string {
	if a.Kind != b.Kind || a.Value != b.Value || a.Line != b.Line || a.Column != b.Column || len(a.Content) != len(b.Content) {
		return fmt.Sprintf("%s: kind %d %q at %d:%d with %d children, want kind %d %q at %d:%d with %d children", path,
			a.Kind, a.Value, a.Line, a.Column, len(a.Content), b.Kind, b.Value, b.Line, b.Column, len(b.Content))
	}
	for i := range a.Content {
		if d := sameTree(a.Content[i], b.Content[i], fmt.Sprintf("%s/%d", path, i)); d != "" {
			return d
		}
	}
	return ""
}

// checkStream: whatever the streaming reader takes, yaml.v3 reads as one
// document with the same tree, and loading it streaming gives what loading
// it through yaml.v3 gives: the same errors (file, line, column, field,
// message), or States that do not differ, with the same VMs in the same
// order. It reports whether the document was streamed.
func checkStream(t *testing.T, data []byte) bool {
	t.Helper()
	tree, err := streamTree(bytes.NewReader(data))
	if err == errNotStreamable {
		if _, err := streamBuilder("f.yaml", bytes.NewReader(data)); err != errNotStreamable {
			t.Fatalf("the tree reader refuses a document the loader streams (%v)", err)
		}
		return false
	}
	if err != nil {
		t.Fatalf("streamTree: %v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("streamed a document yaml.v3 refuses: %v\n%q", err, data)
	}
	if err := dec.Decode(&next); err == nil {
		t.Fatalf("streamed a file with a second document at line %d\n%q", next.Line, data)
	}
	if len(doc.Content) != 1 {
		t.Fatalf("yaml.v3 reads %d nodes", len(doc.Content))
	}
	if d := sameTree(tree, doc.Content[0], ""); d != "" {
		t.Fatalf("the streamed tree differs from yaml.v3's: %s\n%q", d, data)
	}

	sb, serr := streamBuilder("f.yaml", bytes.NewReader(data))
	if serr == errNotStreamable {
		t.Fatalf("the loader does not stream a document the tree reader reads\n%q", data)
	}
	nb, nerr := nodeBuilder("f.yaml", data)
	if !sameErrors(serr, nerr) {
		t.Fatalf("errors differ:\nstreamed: %v\nyaml.v3:  %v\n%q", serr, nerr, data)
	}
	if serr != nil {
		return true
	}
	s1, err1 := sb.Build()
	s2, err2 := nb.Build()
	if !sameErrors(err1, err2) {
		t.Fatalf("Build errors differ:\nstreamed: %v\nyaml.v3:  %v\n%q", err1, err2, data)
	}
	if err1 != nil {
		return true
	}
	if c := Diff(s1, s2); !c.Empty() {
		t.Fatalf("the states differ: %+v\n%q", c, data)
	}
	if !reflect.DeepEqual(s1.VMs(), s2.VMs()) {
		t.Fatalf("the VMs differ:\n%+v\n%+v", s1.VMs(), s2.VMs())
	}
	return true
}

func sameErrors(a, b error) bool {
	var la, lb ErrorList
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	if !errors.As(a, &la) || !errors.As(b, &lb) || len(la) != len(lb) {
		return false
	}
	for i := range la {
		if *la[i] != *lb[i] {
			return false
		}
	}
	return true
}

// FuzzStreamMatchesYAML: see checkStream.
func FuzzStreamMatchesYAML(f *testing.F) {
	for _, tc := range checkCases {
		f.Add([]byte(tc.doc))
	}
	for _, doc := range streamCases {
		f.Add([]byte(doc.doc))
	}
	addRelocatedSeeds(f)
	files, _ := filepath.Glob("../examples/policies/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkStream(t, data) })
}

// streamCases are documents in and out of the streaming subset; stream
// says which. Every one is also checked against yaml.v3.
var streamCases = []struct {
	name   string
	stream bool
	doc    string
}{
	{"indentless lists", true, "hosts:\n- name: h\n  pa: 198.18.0.1\ntenants:\n- name: t\n  vnets:\n  - name: v\n    vni: 5\n    subnets: [10.0.0.0/24]\n    vms:\n    - name: m\n      mac: 02:00:00:00:00:01\n      ca: 10.0.0.1\n      host: h\n"},
	{"item on the next line", true, "hosts:\n  -\n    name: h\n    pa: 198.18.0.1\n"},
	{"comments and markers", true, "# a policy\n--- # start\nhosts: # the hosts\n  # first\n  - name: h   # a host\n\n    pa: \"198.18.0.1\" # quoted\n...\n# done\n"},
	{"quoted keys and escapes", true, "\"hosts\":\n  - 'name': \"h\\x41\\u00e9\\t\"\n    pa: 'it''s'\n"},
	{"flow everywhere", true, "hosts: [{name: h, pa: 198.18.0.1}, {name: 'g', pa: \"198.18.0.2\"}]\ntenants: [{name: t, vnets: [{name: v, vni: 5, subnets: [10.0.0.0/24, fd00::/64], vms: [{name: m, mac: 02:00:00:00:00:01, ca: [10.0.0.1, fd00::1], host: h}]}]}]\n"},
	{"encapsulations", true, "hosts:\n  - {name: h, pa: 198.18.0.1}\ntenants:\n  - name: t\n    vnets:\n      - name: v\n        vni: 5\n        encap: geneve   # per VNET\n        subnets: [10.0.0.0/24]\n        vms:\n          - {name: m, mac: 02:00:00:00:00:01, ca: 10.0.0.1, host: h}\n      - {name: w, vni: 6, encap: 'nvgre', subnets: [10.0.1.0/24]}\n      - {name: x, vni: 7, encap: \"vxlan\", subnets: [10.0.2.0/24]}\n      - {name: y, vni: 8, encap: gre, subnets: [10.0.3.0/24]}\n"},
	{"CRLF", true, "hosts:\r\n  - name: h\r\n    pa: 198.18.0.1\r\n"},
	{"no final line break", true, "hosts:\n  - name: h\n    pa: 198.18.0.1"},
	{"non-ASCII", true, "hosts:\n  - name: hôte-é   # ç\n    pa: 198.18.0.1\n"},
	{"indented root", true, "  hosts:\n    - name: h\n      pa: 198.18.0.1\n"},
	{"plain with colons and hashes", true, "router_mac: 02:6e:69:63:00:01\nhosts:\n  - name: a#b\n    pa: fd00::1\n"},
	{"wrong shapes", true, "hosts: 7\ntenants:\n  - name: t\n    vnets:\n      - vms:\n          - 5\n          - [a]\n          - {name: x, bogus: 1}\n        name: v\n"},
	{"repeated keys", true, "tenants:\n  - name: t\n    vnets:\n      - name: v\n        vni: 5\n        subnets: [10.0.0.0/24]\n        vms:\n          - {name: a, mac: 02:00:00:00:00:01, ca: 10.0.0.1, host: h}\n        vms:\n          - {name: b, mac: 02:00:00:00:00:02, ca: 10.0.0.2, host: h}\ntenants: []\n"},

	{"empty", false, ""},
	{"comments only", false, "# nothing\n\n   # at all\n"},
	{"marker only", false, "---\n"},
	{"two documents", false, "hosts: []\n---\ntenants: []\n"},
	{"anchors", false, "hosts:\n  - &h {name: h, pa: 198.18.0.1}\n"},
	{"tags", false, "hosts: !!seq []\n"},
	{"block scalar", false, "router_mac: |\n  02:00:00:00:00:01\n"},
	{"multi-line plain", false, "hosts:\n  - name: a\n      b\n"},
	{"multi-line flow", false, "hosts: [\n  {name: h, pa: 198.18.0.1}]\n"},
	{"tab", false, "hosts:\n\t- name: h\n"},
	{"empty value", false, "hosts:\n  - name:\n    pa: 198.18.0.1\n"},
	{"syntax error", false, "hosts:\n  - name: h\n    pa: 1\n      x: 2\n"},
	{"bad indentation", false, "hosts:\n    - name: h\n  - name: g\n"},
	{"trailing comma", false, "hosts: [a, ]\n"},
	{"directive", false, "%YAML 1.1\n---\nhosts: []\n"},
	{"byte order mark", false, "\ufeffhosts: []\n"},
	{"line separator", false, "hosts: [] # \u2028\n"},
	{"mapping in a plain value", false, "hosts: a: b\n"},
}

func TestStreamMatchesYAML(t *testing.T) {
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkStream(t, []byte(tc.doc)); got != tc.stream {
				t.Errorf("streamed: %v, want %v", got, tc.stream)
			}
		})
	}
	for _, tc := range checkCases {
		t.Run("check/"+tc.name, func(t *testing.T) { checkStream(t, []byte(tc.doc)) })
	}
}

// A VM that fails a check is named by file, line and field however the
// document was read, among many: a check of the decoder and one of Build.
func TestStreamedVMErrors(t *testing.T) {
	doc := func(badCA, badMAC int) ([]byte, int) {
		var b strings.Builder
		b.WriteString("hosts: [{name: h, pa: 198.18.0.1}]\ntenants:\n  - name: t\n    vnets:\n      - name: v\n        vni: 5\n        subnets: [10.0.0.0/16]\n        vms:\n")
		line, bad := 9, 0
		for i := range 1500 {
			ca := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
			mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)
			switch i {
			case badCA:
				ca, bad = "10.0.0.1", line+2 // VM 0's
			case badMAC:
				mac, bad = "02:00:00:00:00", line+1
			}
			fmt.Fprintf(&b, "          - name: vm%d\n            mac: %s\n            ca: %s\n            host: h\n", i, mac, ca)
			line += 4
		}
		return []byte(b.String()), bad
	}
	for _, tc := range []struct {
		badCA, badMAC int
		want          string
	}{
		{1234, -1, "tenants[0].vnets[0].vms[1234].ca[0]: duplicate customer address 10.0.0.1 in VNET v: already VM vm0's"},
		{-1, 1432, "tenants[0].vnets[0].vms[1432].mac: invalid MAC"},
	} {
		data, line := doc(tc.badCA, tc.badMAC)
		if !checkStream(t, data) {
			t.Fatal("not streamed")
		}
		_, err := Parse("big.yaml", data)
		var list ErrorList
		if !errors.As(err, &list) || len(list) != 1 {
			t.Fatalf("got %v", err)
		}
		if w := fmt.Sprintf("big.yaml:%d: %s", line, tc.want); !strings.HasPrefix(list[0].Error(), w) {
			t.Errorf("got %q, want %q...", list[0].Error(), w)
		}
	}
}

// genDoc writes a random document in (and sometimes just out of) the
// streaming subset: the byte fuzzer mostly makes documents the reader
// hands to yaml.v3; these exercise what it reads itself.
type genDoc struct {
	r   *rand.Rand
	b   strings.Builder
	crl bool
}

var (
	genKeys   = []string{"name", "mac", "ca", "host", "pa", "hosts", "tenants", "vnets", "vms", "a", "b c", "k:x", "x#y", "'q'", `"d"`, `"e f"`, "'it''s'", "name  "}
	genValues = []string{"h", "10.0.0.1", "fd00::1", "02:00:00:00:00:01", `"02:00:00:00:00:01"`, "a b", "a#b", "x:y", "'it''s'", `"a\tb"`, `"\u00e9\x41"`,
		"[a, b]", "[]", "{}", "{a: b, c: [d]}", "[fd00::1, 'x', \"y\"]", "~", "null", "[a,b]", "[ a ,  b ]", "{a: [1, {b: c}]}",
		"3", "é", `"a" # c`, "a # c", `"\x41\U0001F600\N\_\L"`, "'' ", `""`, "x  y  "}
	// Values yaml.v3 reads differently or refuses: the reader must
	// leave them to it.
	genOutside = []string{"-5", "a:", "[a: b]", "{a: }", "'a' b", "&x a", "*x", "!t a", "|", "[a,", "'a", `"\q"`, `"\/"`, "a\tb", "? a", "@a", "`a", "%a", "a: b"}
)

func (g *genDoc) line(indent int, s string) {
	g.b.WriteString(strings.Repeat(" ", indent))
	g.b.WriteString(s)
	if g.crl {
		g.b.WriteString("\r")
	}
	g.b.WriteString("\n")
	if g.r.IntN(8) == 0 {
		g.b.WriteString(strings.Repeat(" ", g.r.IntN(6)) + []string{"", "# comment", "#"}[g.r.IntN(3)] + "\n")
	}
}

func (g *genDoc) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *genDoc) value() string {
	if g.r.IntN(40) == 0 {
		return g.pick(genOutside)
	}
	return g.pick(genValues)
}

func (g *genDoc) space() string { return strings.Repeat(" ", 1+g.r.IntN(2)*g.r.IntN(3)) }

// block writes a mapping or a list at indent; first is the text before
// its first line's content ("- " of an enclosing item), or "".
func (g *genDoc) block(indent, depth int, first string) {
	pre := func(i int) (int, string) {
		if i == 0 && first != "" {
			return indent - len(first), first
		}
		return indent, ""
	}
	n := 1 + g.r.IntN(3)
	if g.r.IntN(3) == 0 && depth > 0 {
		for i := range n {
			in, p := pre(i)
			g.item(in, p, depth)
		}
		return
	}
	for i := range n {
		in, p := pre(i)
		k := g.pick(genKeys)
		if depth <= 0 || g.r.IntN(3) == 0 {
			v := g.value()
			if g.r.IntN(4) == 0 {
				v += "   # note"
			}
			g.line(in, p+k+":"+g.space()+v)
			continue
		}
		g.line(in, p+k+":")
		if g.r.IntN(3) == 0 {
			// A list at the key's indentation.
			for range 1 + g.r.IntN(3) {
				g.item(indent, "", depth-1)
			}
		} else {
			g.block(indent+2+g.r.IntN(2)*2, depth-1, "")
		}
	}
}

func (g *genDoc) item(indent int, p string, depth int) {
	dash := "-" + g.space()
	switch g.r.IntN(4) {
	case 0:
		g.line(indent, p+dash+g.value())
	case 1:
		g.line(indent, p+"-")
		g.block(indent+2, depth-1, "")
	default:
		in := indent + len(p) + len(dash)
		g.block(in, depth-1, p+dash)
	}
}

func TestStreamMatchesYAMLGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	n, streamed := 1500, 0
	if testing.Short() {
		n = 300
	}
	for range n {
		g := &genDoc{r: r, crl: r.IntN(10) == 0}
		if r.IntN(5) == 0 {
			g.b.WriteString("---\n")
		}
		g.block(r.IntN(2), 3, "")
		if r.IntN(5) == 0 {
			g.b.WriteString("...\n# end\n")
		}
		if checkStream(t, []byte(g.b.String())) {
			streamed++
		}
	}
	// The generator aims at the subset, with a few steps outside it.
	if streamed < n/10 {
		t.Errorf("only %d of %d generated documents were streamed", streamed, n)
	}
	t.Logf("%d of %d generated documents streamed", streamed, n)
}

// Lines longer than the reader's buffer.
func TestStreamLongLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("# " + strings.Repeat("x", 300<<10) + "\n")
	b.WriteString("hosts: [{name: h, pa: 198.18.0.1}]\ntenants:\n  - name: t\n    vnets:\n      - name: v\n        vni: 5\n        subnets: [10.0.0.0/16]\n        vms:\n")
	b.WriteString("          - {name: m, mac: 02:00:00:00:00:01, host: h, ca: [")
	for i := range 30000 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "10.0.%d.%d", i/250, i%250+1)
	}
	b.WriteString("]}\n")
	data := []byte(b.String())
	if len(data) < 2*256<<10 {
		t.Fatalf("only %d bytes", len(data))
	}
	if !checkStream(t, data) {
		t.Fatal("not streamed")
	}
	s, err := Parse("long.yaml", data)
	if err != nil || s.MappingCount() != 30000 {
		t.Fatalf("got %v", err)
	}
}
