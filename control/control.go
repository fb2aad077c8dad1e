package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Request is one command.
type Request struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
}

// Response is the answer to one Request: Error is set when the command
// failed; Result holds the command's result otherwise.
type Response struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// MaxLine bounds one request or response line. Flow dumps of large tables
// are the longest answers; 64 MiB holds several hundred thousand flows.
const MaxLine = 64 << 20

// Port is one NIC port.
type Port struct {
	ID         uint32 `json:"id"`
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	VM         string `json:"vm,omitempty"`
	Interface  string `json:"interface,omitempty"`
	MAC        string `json:"mac"`
	MTU        int    `json:"mtu"`
	RxPackets  uint64 `json:"rx_packets"`
	RxBytes    uint64 `json:"rx_bytes"`
	TxPackets  uint64 `json:"tx_packets"`
	TxBytes    uint64 `json:"tx_bytes"`
	Drops      uint64 `json:"drops"`
	Exceptions uint64 `json:"exceptions"`
}

// Show describes the daemon: host, driver, policy and ports.
type Show struct {
	Host       string    `json:"host"`
	PA         string    `json:"pa"`
	Driver     string    `json:"driver"`
	Device     string    `json:"device"`
	Location   string    `json:"location"`
	PolicyFile string    `json:"policy_file,omitempty"`
	PolicyLoad time.Time `json:"policy_loaded"`
	// Store is set when the desired state comes from a store rather than
	// a policy file.
	Store *StoreStatus `json:"store,omitempty"`
	// PolicyRejected is set while the policy file is one the daemon
	// refused: the switch runs the policy loaded at PolicyLoad.
	PolicyRejected *PolicyRejection `json:"policy_rejected,omitempty"`
	Uptime         time.Duration    `json:"uptime"`
	Ports          []Port           `json:"ports"`
	Capture        string           `json:"capture,omitempty"`
	// SealPublicKey is the NIC's sealing public key (hex) when it opens
	// sealed frames.
	SealPublicKey string `json:"seal_public_key,omitempty"`
}

// Seal answers seal: whether the NIC opens sealed frames, its public key,
// and the VM keys the daemon registered, by port.
type Seal struct {
	Crypto    bool       `json:"crypto"`
	PublicKey string     `json:"public_key,omitempty"`
	File      string     `json:"file,omitempty"` // where the public key was written
	Ports     []SealPort `json:"ports,omitempty"`
	Routes    int        `json:"routes"`  // sealed routes pushed to the NIC
	Refused   uint64     `json:"refused"` // sealed-route pushes the NIC refused
	Error     string     `json:"error,omitempty"`
}

// SealPort is one vport's registered VM keys, oldest first.
type SealPort struct {
	VM     string  `json:"vm"`
	Port   uint32  `json:"port"`
	KeyIDs []uint8 `json:"key_ids"`
}

// StoreStatus is what a daemon that follows a store knows of it.
type StoreStatus struct {
	Spec     string `json:"spec"`
	Revision int64  `json:"revision"` // the revision the switch applies
	// Stale is set while the store cannot be reached; the switch forwards
	// on the state of Revision since StaleSince.
	Stale      bool      `json:"stale,omitempty"`
	StaleSince time.Time `json:"stale_since,omitzero"`
	Resyncs    int       `json:"resyncs"`
	Error      string    `json:"error,omitempty"` // the last problem, if any
}

// PolicyRejection is a policy file the daemon refused: where its first
// problem is (file, line, field; line and field are absent when the file
// could not be read or this host cannot run it), how many problems it has,
// the whole error as reload reports it, and when it was refused.
type PolicyRejection struct {
	File     string    `json:"file"`
	Line     int       `json:"line,omitempty"`
	Field    string    `json:"field,omitempty"`
	Msg      string    `json:"msg"`
	Problems int       `json:"problems"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// Caps is the NIC's capabilities, in words.
type Caps struct {
	Text string `json:"text"`
}

// Flow is one unified flow: its match, actions, where it lives and its counters.
type Flow struct {
	Rule     uint64        `json:"rule"`
	Location string        `json:"location"` // nic or host
	Why      string        `json:"why"`
	Detail   string        `json:"detail,omitempty"`
	Match    string        `json:"match"`
	Actions  []string      `json:"actions"`
	Scope    uint32        `json:"scope"`
	Gen      uint64        `json:"gen"`
	Shadow   uint64        `json:"shadow_rule,omitempty"`
	Packets  uint64        `json:"packets"`
	Bytes    uint64        `json:"bytes"`
	Age      time.Duration `json:"age"`
	Idle     time.Duration `json:"idle"`
}

// Explanation is what the vswitch does with a packet or flow.
type Explanation struct {
	Text     string `json:"text"` // the ofproto/trace-like report
	Where    string `json:"where"`
	Why      string `json:"why"`
	Verdict  string `json:"verdict"`
	Detail   string `json:"detail,omitempty"`
	CachedAt uint64 `json:"rule,omitempty"`
	// Directory is what the on-demand layer knows of the destination (or,
	// on the uplink, the sender) when the packet needs a directory lookup:
	// waiting for it, dropped (queue full, lookup timed out).
	Directory string `json:"directory,omitempty"`
}

// Stats are the switch's and the NIC's counters.
type Stats struct {
	Text       string            `json:"text"` // the switch's non-zero counters, one a line
	FlowsNIC   int               `json:"flows_nic"`
	FlowsHost  int               `json:"flows_host"`
	Exceptions map[string]uint64 `json:"exceptions"`
	Drops      map[string]uint64 `json:"drops"`
	NICDrops   map[string]uint64 `json:"nic_drops"`
	Updates    uint64            `json:"updates"`
	Rejected   uint64            `json:"rejected_policies"`
	// OnDemand: the directory layer's counters, with on-demand resolution.
	OnDemand *OnDemandStats `json:"ondemand,omitempty"`
}

// OnDemandStats count what on-demand resolution did: lookups, cache hits
// and misses, negative answers, held packets and drops by reason, and the
// packets held now.
type OnDemandStats struct {
	Lookups          uint64 `json:"lookups"`
	Hits             uint64 `json:"hits"`
	Misses           uint64 `json:"misses"`
	Negative         uint64 `json:"negative"`
	Held             uint64 `json:"held"`
	Released         uint64 `json:"released"`
	DroppedQueueFull uint64 `json:"dropped_queue_full"`
	DroppedTimeout   uint64 `json:"dropped_timeout"`
	DroppedError     uint64 `json:"dropped_error"`
	QueueDepth       int    `json:"queue_depth"`
}

// String is one counter a line, as the stats text prints them.
func (s *OnDemandStats) String() string {
	return fmt.Sprintf("ondemand lookups %d\nondemand hits %d\nondemand misses %d\nondemand negative %d\n"+
		"ondemand held %d\nondemand released %d\nondemand dropped queue full %d\nondemand dropped lookup timed out %d\n"+
		"ondemand dropped lookup failed %d\nondemand queue depth %d\n",
		s.Lookups, s.Hits, s.Misses, s.Negative, s.Held, s.Released, s.DroppedQueueFull, s.DroppedTimeout, s.DroppedError, s.QueueDepth)
}

// Learned answers learned: what the NIC reported of the addresses its
// vports use, and the recent announcements (gratuitous ARP, unsolicited
// neighbour advertisements), oldest first.
type Learned struct {
	// Supported is false when the NIC does not learn addresses
	// (its Capabilities.AddressLearning).
	Supported     bool                  `json:"supported"`
	Addresses     []LearnedAddress      `json:"addresses"`
	Announcements []AddressAnnouncement `json:"announcements"`
	// Spoofed counts, by VM, the packets dropped for a spoofed source.
	Spoofed map[string]uint64 `json:"spoofed,omitempty"`
}

// LearnedAddress is one source address a vport used.
type LearnedAddress struct {
	VM        string    `json:"vm,omitempty"`
	Port      uint32    `json:"port"`
	MAC       string    `json:"mac"`
	Addr      string    `json:"addr"`
	Owned     bool      `json:"owned"` // the policy gives the VM this MAC and address
	Reports   uint64    `json:"reports"`
	Announced uint64    `json:"announced"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

// AddressAnnouncement is one announcement; First marks a VM's first on
// this host since it became local here (a migrated VM arriving).
type AddressAnnouncement struct {
	VM    string    `json:"vm,omitempty"`
	Port  uint32    `json:"port"`
	MAC   string    `json:"mac"`
	Addr  string    `json:"addr"`
	At    time.Time `json:"at"`
	Owned bool      `json:"owned"`
	Local bool      `json:"local"`
	First bool      `json:"first"`
}

// Activated answers activate.
type Activated struct {
	VM string `json:"vm"`
}

// CaptureStatus answers capture start and stop.
type CaptureStatus struct {
	File    string `json:"file"`
	Active  bool   `json:"active"`
	Packets uint64 `json:"packets"`
}

// Reloaded answers reload.
type Reloaded struct {
	Changed bool `json:"changed"`
}

// Client talks to one daemon.
type Client struct {
	Path    string
	Timeout time.Duration // per call; default 10s
}

// Call sends one request and decodes the result into out (unless out is
// nil). A command that failed in the daemon returns *CommandError.
func (c *Client) Call(ctx context.Context, cmd string, args []string, out any) error {
	to := c.Timeout
	if to == 0 {
		to = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return fmt.Errorf("connecting to vswitchd at %s: %w", c.Path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req, err := json.Marshal(Request{Cmd: cmd, Args: args})
	if err != nil {
		return err
	}
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("sending to vswitchd: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return fmt.Errorf("reading from vswitchd: %w", err)
		}
		return errors.New("vswitchd closed the connection without answering")
	}
	var resp Response
	if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
		return fmt.Errorf("vswitchd answered something that is not a response: %w", err)
	}
	if resp.Error != "" {
		return &CommandError{Cmd: cmd, Msg: resp.Error}
	}
	if out == nil || len(resp.Result) == 0 {
		return nil
	}
	return json.Unmarshal(resp.Result, out)
}

// CommandError is a command the daemon refused or could not carry out.
type CommandError struct {
	Cmd string
	Msg string
}

func (e *CommandError) Error() string { return e.Cmd + ": " + e.Msg }
