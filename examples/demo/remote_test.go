package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// As root, NIC=remote tells the namespace story with each host's NIC in a
// nicd process of its own (serving softnic, then XDP), which vswitchd
// drives over the secure channel: every check holds (the traffic, the offloaded flows, what the NIC learned
// over the channel, the NIC forwarding while vswitchd is away, the host
// reconnecting and reconciling after nicd restarts), and no namespace is
// left. It goes through the demo's main path as `make demo NIC=remote` runs
// it.
func TestNamespaceStoryRemote(t *testing.T) {
	if ok, why := canRunNamespaces(); !ok {
		t.Skip("the namespace story cannot run here: " + why)
	}
	if testing.Short() {
		t.Skip("-short: the namespace story builds three binaries and takes about fifteen seconds per driver")
	}
	useSharedBinaries(t, "")
	for _, drv := range []string{"softnic", "xdp"} {
		t.Run(drv, func(t *testing.T) {
			t.Setenv("DRIVER", drv)
			t.Setenv("STORE", "")
			t.Setenv("NIC", "remote")
			var out bytes.Buffer
			if code := run(context.Background(), nil, &out, &out); code != 0 {
				t.Fatalf("DRIVER=%s NIC=remote: the demo exits %d\n%s", drv, code, out.String())
			}
			story := out.String()
			learned := "reported blue-web-1's address 10.0.0.10 over the secure channel"
			for _, want := range []string{
				"driver " + drv + ", each NIC in a nicd process of its own (NIC=remote)\n",
				", driver remote on " + drv + " (",
				"where=nic",
				"Handled: NIC: offloaded",
				"with no vswitchd on host-a: its NIC (nicd) forwards",
				"reconnected to the new nicd and reconciled",
				learned,
			} {
				if !strings.Contains(story, want) {
					t.Errorf("the story does not show %q", want)
				}
			}
			checkSealedStep(t, story, drv)
			if n := strings.Count(story, "bytes back intact"); n != 5 {
				t.Errorf("%d bulk exchanges came back intact, want 5 (4 in the bulk section, 1 inbound)", n)
			}
			if !strings.Contains(story, "all ") || strings.Contains(story, "FAIL") {
				t.Errorf("the story does not say that every check held:\n%s", story)
			}
			noNamespacesLeft(t)
		})
	}
}

func TestParseNIC(t *testing.T) {
	for in, want := range map[string]bool{"": false, "local": false, "remote": true, " remote ": true} {
		if got, err := parseNIC(in); err != nil || got != want {
			t.Errorf("NIC=%q: %v, %v", in, got, err)
		}
	}
	if _, err := parseNIC("dpu"); err == nil {
		t.Error("NIC=dpu accepted")
	}
}

// `make demo NIC=remote` runs the demo's main path with NIC in its
// environment.
func TestMakeDemoPassesNIC(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "demo", "NIC=remote").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `NIC="remote"`) || !strings.Contains(string(out), "run ./examples/demo") {
		t.Errorf("make demo NIC=remote does not run the demo with NIC=remote:\n%s", out)
	}
}
