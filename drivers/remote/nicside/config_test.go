package nicside

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/drivers/remote/remotetest"
)

const softnicSection = remotetest.SoftnicSection

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	remotetest.KeyFiles(t, dir)
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
		{"driver: softnic\n" + base + strings.Replace(softnicSection, "device: dpu0", "device: dpu0\n  max_rules: -1", 1), "softnic.max_rules: -1: want 0 or more"},
		{"driver: softnic\n" + base + strings.Replace(softnicSection, "device: dpu0", "device: dpu0\n  max_batch: -5", 1), "softnic.max_batch: -5: want 0 or more"},
		{"driver: softnic\n" + base + strings.Replace(softnicSection, "device: dpu0", "device: dpu0\n  max_rules: 1073741824", 1), "softnic.max_rules: 1073741824 is above the softnic driver's maximum, 536870912"},
		{"driver: xdp\n" + base + "xdp: {max_rules: -2, ports: [{name: p1}]}\n", "xdp.max_rules: -2"},
		{"driver: xdp\n" + base + "xdp: {max_batch: -2, ports: [{name: p1}]}\n", "xdp.max_batch: -2"},
		{"driver: xdp\n" + base + "xdp: {max_rules: 67108865, ports: [{name: p1}]}\n", "xdp.max_rules: 67108865 is above the xdp driver's maximum, 67108864"},
		{"driver: tcflower\n" + base + "tcflower: {max_rules: -3, ports: [{name: p1}]}\n", "tcflower.max_rules: -3"},
		{"driver: tcflower\n" + base + "tcflower: {max_batch: -3, ports: [{name: p1}]}\n", "tcflower.max_batch: -3"},
	} {
		if tc.want == "" {
			tc.body = "driver: softnic\n" + tc.body
		}
		p := remotetest.WriteNICConfig(t, dir, tc.body)
		_, err := LoadConfig(p)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("valid config refused: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("config\n%s\nerror %v, want one naming %q", tc.body, err, tc.want)
		}
	}
}
