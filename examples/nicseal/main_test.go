package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealclient"
)

// TestGenkey: the private key file is the one whose public half is printed,
// readable by its owner only, and never overwritten.
func TestGenkey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.key")
	var out, errb bytes.Buffer
	if code := run([]string{"genkey", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	priv, err := sealclient.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := securechan.PrivateKey(priv)
	want := pub.Public()
	if strings.TrimSpace(out.String()) != hex.EncodeToString(want[:]) {
		t.Fatalf("printed %q, the file's public key is %x", out.String(), want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v)", fi.Mode(), err)
	}
	if code := run([]string{"genkey", path}, &out, &errb); code != 1 {
		t.Fatalf("an existing key file was overwritten (exit %d)", code)
	}
}

// TestUsage: wrong command lines exit 2 with the usage, before any socket
// is opened.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	os.WriteFile(key, []byte(strings.Repeat("11", 32)), 0o600)
	for _, args := range [][]string{
		nil, {"frobnicate"}, {"genkey"},
		{"send", "198.18.0.2", "7"},
		{"send", "-key", key, "198.18.0.2", "7", "hi"},
		{"send", "-nic-key", strings.Repeat("22", 32), "-key", key, "not-an-address", "7", "hi"},
		{"send", "-nic-key", strings.Repeat("22", 32), "-key", key, "198.18.0.2", "0", "hi"},
		{"send", "-nic-key", strings.Repeat("22", 32), "-key", key, "-id", "300", "198.18.0.2", "7", "hi"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
	// A missing interface is an error of the run, not of the usage.
	var out, errb bytes.Buffer
	if code := run([]string{"send", "-i", "nosuchif0", "-nic-key", strings.Repeat("22", 32), "-key", key, "198.18.0.2", "7", "hi"}, &out, &errb); code != 1 {
		t.Errorf("missing interface: exit %d, %s", code, errb.String())
	}
}
