//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/tether/tethertest"
)

// The story runs whole and every check in it passes (as root; it says why
// it cannot run otherwise, and that is not a pass of its checks).
func TestStory(t *testing.T) {
	if ok, why := tethertest.CanRun(); !ok {
		t.Skip(why)
	}
	var out bytes.Buffer
	code := run(context.Background(), &out)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("the story failed (exit %d)", code)
	}
	for _, want := range []string{"every check passed", "TETHER", "ENDPOINT", "203.0.113.2:", "203.0.113.3:", "10.0.1.10", "10.0.1.11", "p1", "p2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the story does not show %q", want)
		}
	}
}
