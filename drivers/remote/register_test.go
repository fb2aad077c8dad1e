package remote_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/drivers/remote"
)

// The registered driver needs its three options, and reads the key files
// relative to the configuration's directory.
func TestRegisteredRemote(t *testing.T) {
	if !driver.Known("remote") {
		t.Fatal("remote is not registered")
	}
	ctx := context.Background()
	if _, err := driver.Open(ctx, "remote", driver.Config{Options: map[string]string{"address": "unix:/nonexistent"}}); err == nil ||
		!strings.Contains(err.Error(), "required") {
		t.Fatalf("missing key options: %v", err)
	}
	if _, err := driver.Open(ctx, "remote", driver.Config{Options: map[string]string{"address": "unix:x", "key": "k", "server_key": "p", "serial": "1"}}); err == nil {
		t.Fatal("an option remote did not register was accepted")
	}
	dir := t.TempDir()
	if _, err := remoteGenerate(dir); err != nil {
		t.Fatal(err)
	}
	// The keys are found in Dir; the NIC side is not there.
	_, err := driver.Open(ctx, "remote", driver.Config{Dir: dir,
		Options: map[string]string{"address": "unix:" + filepath.Join(dir, "none.sock"), "key": "host.key", "server_key": "nic.pub"}})
	if err == nil || strings.Contains(err.Error(), "key") {
		t.Fatalf("open with the keys in Dir and no NIC side: %v", err)
	}
	_, err = driver.Open(ctx, "remote", driver.Config{Dir: t.TempDir(),
		Options: map[string]string{"address": "unix:" + filepath.Join(dir, "none.sock"), "key": "host.key", "server_key": "nic.pub"}})
	if err == nil || !strings.Contains(err.Error(), "host.key") {
		t.Fatalf("open with no key files in Dir: %v", err)
	}
}

func remoteGenerate(dir string) (string, error) {
	if _, err := remoteKeys(dir, "host"); err != nil {
		return "", err
	}
	return remoteKeys(dir, "nic")
}

func remoteKeys(dir, name string) (string, error) {
	_, err := remote.GenerateKeyFiles(rand.Reader, filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub"), name)
	return name, err
}
