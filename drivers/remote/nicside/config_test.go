package nicside

import (
	"path/filepath"
	"strings"
	"testing"

	"os"

	"github.com/nicpath/nicpath/drivers/remote"
)

// keys writes a NIC side's and a host's key files into dir.
func keys(t *testing.T, dir string) {
	t.Helper()
	for _, who := range []string{"nic", "host"} {
		if _, err := remote.GenerateKeyFiles(nil, filepath.Join(dir, who+".key"), filepath.Join(dir, who+".pub"), who); err != nil {
			t.Fatal(err)
		}
	}
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "nicd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const softnicSection = `softnic:
  device: dpu0
  ports:
    - {name: vm1, kind: vport, mac: "02:00:00:00:00:01"}
    - {name: vm2, kind: vport, mac: "02:00:00:00:00:02"}
    - {name: uplink, kind: uplink, mac: "02:00:00:00:00:ff", mtu: 1600}
`

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	keys(t, dir)
	base := "key: nic.key\nhosts: [host.pub]\nlisten: [unix:" + filepath.Join(dir, "s") + "]\n"
	for _, tc := range []struct{ body, want string }{
		{base + softnicSection, ""},
		{"driver: softnic\n" + base, "the softnic driver needs its section"},
		{"driver: dpdk\n" + base + softnicSection, "driver: \"dpdk\""},
		{"driver: softnic\nkey: nic.key\nhosts: [host.pub]\n" + softnicSection, "listen: no address"},
		{"driver: softnic\n" + base + "listen_here: 1\n" + softnicSection, "field listen_here not found"},
		{"driver: softnic\nkey: nic.key\nhosts: [nic.key]\nlisten: [tcp:127.0.0.1:0]\n" + softnicSection, "hosts[0]"},
		{"driver: softnic\nkey: nic.pub\nhosts: [host.pub]\nlisten: [tcp:127.0.0.1:0]\n" + softnicSection, "key:"},
		{"driver: softnic\n" + base + "xdp: {}\n" + softnicSection, "a section for xdp"},
		{"driver: softnic\n" + base + strings.Replace(softnicSection, "kind: uplink", "kind: wan", 1), "softnic.ports[2].kind"},
	} {
		if tc.want == "" {
			tc.body = "driver: softnic\n" + tc.body
		}
		p := writeConfig(t, dir, tc.body)
		_, err := LoadConfig(p)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("valid config refused: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("config\n%s\nerror %v, want one naming %q", tc.body, err, tc.want)
		}
	}
}
