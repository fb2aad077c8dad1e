package policy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hostedByHand is HostedVMs as callers computed it before State had it.
func hostedByHand(s *State, host string) []string {
	var out []string
	for _, vm := range s.VMs() {
		sh, ok := s.Shadow(vm.Name)
		if vm.Host == host || ok && sh.Host == host {
			out = append(out, vm.Name)
		}
	}
	return out
}

func TestHostedVMs(t *testing.T) {
	files, err := filepath.Glob("../examples/policies/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		s, err := LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		states := []*State{s}
		for _, sh := range s.Shadows() { // and with each shadow activated
			s2, err := s.Activate(sh.VM, sh.Generation)
			if err != nil {
				t.Fatal(err)
			}
			states = append(states, s2)
		}
		for _, st := range states {
			for _, h := range st.Hosts() {
				var got []string
				for _, vm := range st.HostedVMs(h.Name) {
					got = append(got, vm.Name)
				}
				if want := hostedByHand(st, h.Name); !slices.Equal(got, want) {
					t.Errorf("%s: HostedVMs(%s) = %v, want %v", f, h.Name, got, want)
				}
			}
		}
	}

	// The migrating VM is hosted by both ends, before and after activation;
	// LocalVMs names only the host it runs on.
	s := mustLoadExample(t)
	s2, err := s.Activate("blue-web-2", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*State{s, s2} {
		for _, h := range []string{"host-a", "host-b"} {
			if names := vmNames(st.HostedVMs(h)); !strings.Contains(names, "blue-web-2") {
				t.Errorf("HostedVMs(%s) = %s, without the migrating VM", h, names)
			}
		}
	}
	if names := vmNames(s.LocalVMs("host-a")); strings.Contains(names, "blue-web-2") {
		t.Errorf("LocalVMs(host-a) before activation = %s", names)
	}
	if vms := s.HostedVMs("no-such-host"); vms != nil {
		t.Errorf("HostedVMs of an unknown host = %v", vms)
	}
}
