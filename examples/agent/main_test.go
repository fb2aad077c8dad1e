package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nicpath/nicpath/control"
)

const examplePolicy = "../policies/two-tenants.yaml"

// The story: the plain flow lands on the acme NIC, the NAT flow stays in
// the host because acme refuses set_ip_dst, and both are delivered.
func TestStory(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-policy", examplePolicy}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errb.String(), out.String())
	}
	for _, want := range []string{
		"nic  offloaded",
		"host not_supported",
		"inner destination 198.51.100.20",
		"Handled: host (not_supported): acme: actions[1] set_ip_dst",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The example daemon runs on the vendor's NIC and answers vswitchctl.
func TestServe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-policy", examplePolicy, "-control", sock}, &bytes.Buffer{}, &errb) }()
	c := &control.Client{Path: sock, Timeout: 10 * time.Second}
	var caps control.Caps
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Call(context.Background(), "caps", nil, &caps)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the agent's control socket never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(caps.Text, "acme") {
		t.Errorf("caps: %s", caps.Text)
	}
	var show control.Show
	if err := c.Call(context.Background(), "show", nil, &show); err != nil || show.Driver != "acme" || len(show.Ports) != 5 {
		t.Errorf("show: %+v %v", show, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

func TestUsage(t *testing.T) {
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"extra"}, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "usage: agent") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
