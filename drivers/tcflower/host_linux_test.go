//go:build linux

package tcflower

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/vmtest"
)

// TestOpenOnKernelWithoutFlower runs on this machine's own kernel, which
// has no cls_flower: Open must refuse with hal.ErrNotSupported, say why, and
// leave nothing behind on the interfaces.
func TestOpenOnKernelWithoutFlower(t *testing.T) {
	requireRoot(t)
	if vmtest.InVM() {
		t.Skip("the VM's kernel has cls_flower; this test is for kernels without it")
	}
	ns := newNetNS(t, "tch")
	ns.ip("link", "add", "p1", "type", "veth", "peer", "name", "vm1")
	ns.ip("link", "set", "p1", "up")
	n, err := Open(context.Background(), Config{Ports: []PortConfig{{Name: "p1", Kind: hal.PortVPort}}, NetNS: ns.Path})
	if err == nil {
		n.Close()
		t.Skip("this kernel takes flower filters: the refusal cannot be seen here (the VM tier tests the driver on it)")
	}
	if !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("Open: %v, want an error wrapping hal.ErrNotSupported", err)
	}
	if !strings.Contains(err.Error(), "flower") {
		t.Errorf("the refusal does not name flower: %v", err)
	}
	t.Logf("refusal: %v", err)
	out, _ := ns.tc("qdisc", "show", "dev", "p1")
	if strings.Contains(out, "clsact") {
		t.Errorf("a refused Open left a qdisc behind: %s", out)
	}
	if _, err := Open(context.Background(), Config{Ports: []PortConfig{{Name: "nosuch0", Kind: hal.PortVPort}}, NetNS: ns.Path}); !errors.Is(err, hal.ErrNotFound) {
		t.Errorf("Open on a missing interface: %v, want ErrNotFound", err)
	}
}
