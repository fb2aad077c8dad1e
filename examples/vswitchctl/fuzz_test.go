package main

import (
	"strings"
	"testing"
)

// FuzzParse: any command line is either a request for a known command or
// refused (and then printed as usage, exit 2); never a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"show", "flows --nic", "explain blue-web-1 10.0.0.10 10.0.0.11 udp 1 53",
		"explain uplink 1001 198.18.0.2 10.0.0.11 10.0.0.10", "capture start x.pcapng", "activate a b"} {
		f.Add(s)
	}
	known := map[string]bool{"show": true, "caps": true, "flows": true, "explain": true, "stats": true,
		"activate": true, "capture": true, "reload": true, "seal": true}
	f.Fuzz(func(t *testing.T, line string) {
		req, err := parse(strings.Fields(line))
		if err != nil {
			return
		}
		if !known[req.Cmd] {
			t.Fatalf("accepted unknown command %q", req.Cmd)
		}
		if req.Cmd == "flows" && len(req.Args) == 1 && req.Args[0] != "host" && req.Args[0] != "nic" {
			t.Fatalf("flows filter %q", req.Args[0])
		}
	})
}
