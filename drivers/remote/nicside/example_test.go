package nicside_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/remote/nicside"
)

// A NIC side that serves a software NIC on a unix socket, and a host that
// opens it through drivers/remote with the pinned keys.
func Example() {
	dir, err := os.MkdirTemp("", "nicside-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// The NIC side's and the host's key pairs (nicd keygen writes these).
	for _, who := range []string{"nic", "host"} {
		if _, err := remote.GenerateKeyFiles(nil, filepath.Join(dir, who+".key"), filepath.Join(dir, who+".pub"), who); err != nil {
			fmt.Println(err)
			return
		}
	}
	sock := filepath.Join(dir, "nicd.sock")
	conf := `driver: softnic
key: nic.key
hosts: [host.pub]
listen: ["unix:` + sock + `"]
log_level: warn
softnic:
  device: dpu0
  ports:
    - {name: vm1, kind: vport, mac: "02:00:00:00:00:01"}
    - {name: uplink, kind: uplink, mac: "02:00:00:00:00:ff", mtu: 1600}
`
	path := filepath.Join(dir, "nicd.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		fmt.Println(err)
		return
	}

	c, err := nicside.LoadConfig(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("driver:", c.Driver, "hosts:", c.HostKeys(), "log level:", c.Level())

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- nicside.Serve(ctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)), func(addrs []string) { ready <- addrs })
	}()
	select {
	case addrs := <-ready:
		fmt.Println("listening on", len(addrs), "address")
	case err := <-done:
		fmt.Println("serve:", err)
		cancel()
		return
	}

	// The host's side: the NIC's public key pinned, its own private key.
	nic, err := remote.Open(ctx, remote.Config{
		Address:       "unix:" + sock,
		KeyFile:       filepath.Join(dir, "host.key"),
		ServerKeyFile: filepath.Join(dir, "nic.pub"),
	})
	if err != nil {
		fmt.Println("open:", err)
	} else {
		for _, p := range nic.Ports() {
			fmt.Println("port", p.Name, p.MAC)
		}
		nic.Close()
	}

	cancel()
	fmt.Println("serve returned:", <-done)
	// Output:
	// driver: softnic hosts: 1 log level: WARN
	// listening on 1 address
	// port vm1 02:00:00:00:00:01
	// port uplink 02:00:00:00:00:ff
	// serve returned: <nil>
}
