package nicside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/drivers/softnic/afpacket"
	"github.com/nicpath/nicpath/drivers/tcflower"
	"github.com/nicpath/nicpath/drivers/xdp"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// Serve opens the driver, listens on every address and serves the NIC
// until ctx is done.
func Serve(ctx context.Context, c *Config, log *slog.Logger, ready func([]string)) error {
	nic, release, err := openNIC(ctx, c, log)
	if err != nil {
		return fmt.Errorf("open %s: %w", c.Driver, err)
	}
	defer release()
	caps := nic.Capabilities()
	log.Info("nicd: NIC open", "driver", caps.Driver, "device", caps.Device, "ports", len(nic.Ports()))
	srv, err := remote.NewServer(nic, remote.ServerConfig{PrivateKey: c.private, HostKeys: c.hostKeys, Logger: log, ApplyChunk: c.ApplyChunk})
	if err != nil {
		return err
	}
	var lns []net.Listener
	var addrs []string
	for _, a := range c.Listen {
		ln, err := remote.Listen(a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", a, err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().Network()+":"+ln.Addr().String())
		log.Info("nicd: listening", "addr", a, "bound", ln.Addr().String())
	}
	pub := c.private.Public()
	log.Info("nicd: serving", "public_key", pub.String(), "hosts", len(c.hostKeys))
	if ready != nil {
		ready(addrs)
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	st := srv.Stats()
	log.Info("nicd: stopped", "sessions", st.Sessions, "handshake_failures", st.HandshakeFailures,
		"exceptions_sent", st.ExceptionsSent, "exceptions_dropped", st.ExceptionsDropped)
	return errors.Join(collect(errc)...)
}

func collect(c chan error) []error {
	var out []error
	for e := range c {
		out = append(out, e)
	}
	return out
}

// openNIC opens the configured driver; release closes it and its bindings.
func openNIC(ctx context.Context, c *Config, log *slog.Logger) (hal.NIC, func(), error) {
	switch c.Driver {
	case "softnic":
		return openSoftnic(c.Softnic, log)
	case "xdp":
		x := c.XDP
		cfg := xdp.Config{NetNS: x.NetNS, MaxRules: x.MaxRules, MaxBatch: x.MaxBatch}
		switch x.Mode {
		case "", "auto":
		case "driver":
			cfg.Mode = xdp.ModeDriver
		case "generic":
			cfg.Mode = xdp.ModeGeneric
		default:
			return nil, nil, fmt.Errorf("xdp.mode %q: want auto, driver or generic", x.Mode)
		}
		for _, p := range x.Ports {
			k, _ := kindOf(p.Kind)
			cfg.Ports = append(cfg.Ports, xdp.PortConfig{ID: hal.PortID(p.ID), Name: p.Name, Kind: k})
		}
		n, err := xdp.Open(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return n, func() { n.Close() }, nil
	case "tcflower":
		cfg, err := tcflowerConfig(c.TCFlower)
		if err != nil {
			return nil, nil, err
		}
		n, err := tcflower.Open(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		return n, func() { n.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown driver %q", c.Driver)
}

// tcflowerConfig is the tcflower.Config of the configuration's section.
func tcflowerConfig(t *TCFlowerConfig) (tcflower.Config, error) {
	cfg := tcflower.Config{NetNS: t.NetNS, Tunnels: map[hal.EncapKind]string{}, MaxRules: t.MaxRules, MaxBatch: t.MaxBatch}
	switch t.Placement {
	case "", "any":
	case "hardware":
		cfg.Placement = tcflower.PlaceHardware
	case "software":
		cfg.Placement = tcflower.PlaceSoftware
	default:
		return tcflower.Config{}, fmt.Errorf("tcflower.placement %q: want any, hardware or software", t.Placement)
	}
	for kind, dev := range t.Tunnels {
		switch kind {
		case "vxlan":
			cfg.Tunnels[hal.EncapVXLAN] = dev
		case "geneve":
			cfg.Tunnels[hal.EncapGeneve] = dev
		default:
			return tcflower.Config{}, fmt.Errorf("tcflower.tunnels: %q: want vxlan or geneve", kind)
		}
	}
	for _, p := range t.Ports {
		k, _ := kindOf(p.Kind)
		cfg.Ports = append(cfg.Ports, tcflower.PortConfig{ID: hal.PortID(p.ID), Name: p.Name, Kind: k})
	}
	return cfg, nil
}

func openSoftnic(s *SoftnicConfig, log *slog.Logger) (hal.NIC, func(), error) {
	cfg := softnic.Config{Device: s.Device, Crypto: s.Crypto, MaxRules: s.MaxRules, MaxBatch: s.MaxBatch}
	for _, p := range s.Ports {
		k, _ := kindOf(p.Kind)
		pc := softnic.PortConfig{Name: p.Name, Kind: k, MTU: p.MTU}
		if p.MAC != "" {
			pc.MAC, _ = hal.ParseMAC(p.MAC)
		}
		cfg.Ports = append(cfg.Ports, pc)
	}
	n, err := softnic.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	var bindings []*afpacket.Binding
	release := func() {
		for _, b := range bindings {
			b.Close()
		}
		n.Close()
	}
	if s.Binding == "afpacket" {
		err := nsexec.Do(s.NetNS, func() error {
			for _, hp := range n.Ports() {
				port, err := n.Port(hp.ID)
				if err != nil {
					return err
				}
				b, err := afpacket.Bind(port, hp.Name, afpacket.Options{Logger: log})
				if err != nil {
					return fmt.Errorf("port %s: %w", hp.Name, err)
				}
				bindings = append(bindings, b)
			}
			return nil
		})
		if err != nil {
			release()
			return nil, nil, err
		}
	}
	return n, release, nil
}
