//go:build linux

package xdp

import (
	"context"
	"testing"
)

func TestLoadVirtual(t *testing.T) {
	requireRoot(t)
	n, err := Open(context.Background(), Config{Ports: []PortConfig{{}, {}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := n.Capabilities()
	t.Log(c.String())
}
