package remote

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/nicpath/nicpath/agent/driver"
	"github.com/nicpath/nicpath/hal"
)

// The agent opens a remote NIC like any other driver: driver: remote,
// with driver_options address (unix:…, tcp:…, vsock:…), key (the host's
// private key file) and server_key (the NIC side's public key file); key
// paths are relative to the configuration file. The port plan comes from
// the NIC side (it names its ports); the configured ports and uplink are
// matched to them by name. Each reconnect is reported to the agent
// (driver.Config.OnReconnect), which reconciles its switch.
func init() {
	driver.Register("remote", openDriver, "address", "key", "server_key")
}

func openDriver(ctx context.Context, c driver.Config) (hal.NIC, error) {
	o := c.Options
	if o["address"] == "" || o["key"] == "" || o["server_key"] == "" {
		return nil, errors.New("remote: driver_options address, key and server_key are required")
	}
	rel := func(p string) string {
		if filepath.IsAbs(p) || c.Dir == "" {
			return p
		}
		return filepath.Join(c.Dir, p)
	}
	cfg := Config{Address: o["address"], KeyFile: rel(o["key"]), ServerKeyFile: rel(o["server_key"]), Logger: c.Logger}
	if f := c.OnReconnect; f != nil {
		cfg.OnReconnect = func(Reconnect) { f() }
	}
	return Open(ctx, cfg)
}
