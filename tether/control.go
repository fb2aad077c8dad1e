package tether

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/nicpath/nicpath/control"
	"github.com/nicpath/nicpath/internal/ctlsock"
	"github.com/nicpath/nicpath/tether/lease"
)

// Status answers the control command "tether": an anchor's peers (each
// tether's endpoint as its NAT shows it) or a tether's tunnel, and the
// counters of the sides around them.
type Status struct {
	Role    string            `json:"role"` // "anchor" or "tether"
	Peers   []PeerStatus      `json:"peers,omitempty"`
	Tether  *TetherStatus     `json:"tether,omitempty"`
	Subnet  string            `json:"subnet,omitempty"`
	Pool    int               `json:"pool,omitempty"` // anchor: relocated addresses the policy gives it
	MTU     int               `json:"mtu,omitempty"`  // tether: the MTU offered to nodes
	Counter map[string]uint64 `json:"counters"`
}

// Status describes the anchor.
func (n *AnchorNode) Status() Status {
	s := n.Overlay.Stats()
	return Status{Role: "anchor", Peers: n.Anchor.Status(), Pool: n.Overlay.PoolSize(), Counter: map[string]uint64{
		"to_tunnel": s.ToTunnel.Load(), "from_tunnel": s.FromTunnel.Load(), "dropped": s.Dropped.Load(),
		"too_big": s.TooBig.Load(), "spoofed": s.Spoofed.Load(), "junk": n.Anchor.Junk()}}
}

// Status describes the tether.
func (n *TetherNode) Status() Status {
	st := n.Tether.Status()
	s := n.Site.Stats()
	return Status{Role: "tether", Tether: &st, Subnet: n.Subnet.Name, MTU: n.Site.cfg.MTU, Counter: map[string]uint64{
		"to_tunnel": s.ToTunnel.Load(), "from_tunnel": s.FromTunnel.Load(), "local": s.Local.Load(), "dhcp": s.DHCP.Load(),
		"arp": s.ARP.Load(), "too_big": s.TooBig.Load(), "spoofed": s.Spoofed.Load(), "no_lease": s.NoLease.Load(), "dropped": s.Dropped.Load()}}
}

// ControlHandler answers control commands: "tether" (Status) and "leases"
// ([]lease.Lease; nil leases answers that this end keeps none).
type ControlHandler struct {
	Status func() Status
	Leases func(ctx context.Context) ([]lease.Lease, error)
}

// ServeControl answers package control's protocol (one JSON request line,
// one response line per connection) on a unix socket at path until ctx is
// done, so that vswitchctl's tether and leases commands work against it.
// The socket has vswitchd's lifecycle (package internal/ctlsock): mode 0600
// from its creation, a stale socket at path replaced but never a live
// daemon's nor a file that is not a socket (ServeControl returns the error
// at once), and at the end the file removed only while it is this one.
func ServeControl(ctx context.Context, path string, h ControlHandler) error {
	l, err := ctlsock.Listen(path)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { l.Close(); l.Remove() })
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go serveOne(ctx, c, h)
	}
}

func serveOne(ctx context.Context, c net.Conn, h ControlHandler) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	if !sc.Scan() {
		return
	}
	var req control.Request
	var resp control.Response
	var out any
	err := json.Unmarshal(sc.Bytes(), &req)
	if err == nil {
		switch req.Cmd {
		case "tether":
			out = h.Status()
		case "leases":
			if h.Leases == nil {
				err = errors.New("this end keeps no leases: ask the tether")
			} else {
				out, err = h.Leases(ctx)
			}
		default:
			err = fmt.Errorf("unknown command %q (this is a tether daemon: tether, leases)", req.Cmd)
		}
	}
	if err != nil {
		resp.Error = err.Error()
	} else {
		resp.Result, _ = json.Marshal(out)
	}
	b, _ := json.Marshal(resp)
	c.Write(append(b, '\n'))
}
