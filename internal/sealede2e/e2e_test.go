package sealede2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/drivers/remote/remotetest"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
	"github.com/nicpath/nicpath/internal/testclock"
	"github.com/nicpath/nicpath/policy"
	"github.com/nicpath/nicpath/securechan"
	"github.com/nicpath/nicpath/securechan/sealtest"
	"github.com/nicpath/nicpath/vswitch"
)

// The topology: host-a runs a1 and a2 on one softnic (ports 1, 2, uplink
// 3); b1 runs on host-b, reached through the uplink. 198.18.10.99 is in
// the VNET's subnet but no VM has it: no flow ever leads there.
const policyYAML = `
hosts:
  - name: host-a
    pa: 198.19.0.1
  - name: host-b
    pa: 198.19.0.2
tenants:
  - name: blue
    vnets:
      - name: web
        vni: 5001
        subnets: [198.18.10.0/24]
        vms:
          - name: a1
            mac: 02:00:00:0a:00:01
            ca: 198.18.10.1
            host: host-a
          - name: a2
            mac: 02:00:00:0a:00:02
            ca: 198.18.10.2
            host: host-a
          - name: b1
            mac: 02:00:00:0b:00:01
            ca: 198.18.10.20
            host: host-b
`

const (
	pA1     hal.PortID = 1
	pA2     hal.PortID = 2
	pUplink hal.PortID = 3
	vni                = 5001
	grace              = 10 * time.Second
)

var (
	macA1    = hal.MustMAC("02:00:00:0a:00:01")
	macA2    = hal.MustMAC("02:00:00:0a:00:02")
	macB1    = hal.MustMAC("02:00:00:0b:00:01")
	macNone  = hal.MustMAC("02:00:00:0c:00:99")
	caA1     = netip.MustParseAddr("198.18.10.1")
	caA2     = netip.MustParseAddr("198.18.10.2")
	caB1     = netip.MustParseAddr("198.18.10.20")
	caNone   = netip.MustParseAddr("198.18.10.99")
	paHostB  = netip.MustParseAddr("198.19.0.2")
	macUplnk = hal.MustMAC("02:00:00:00:ff:01")
)

// secrets are the destinations a1 only ever sends sealed: nothing the host
// sees may reveal them.
var secrets = []sealtest.Secret{{IP: caB1, MAC: macB1}, {IP: caNone, MAC: macNone}}

// recordingNIC is what the host sees of the NIC: it keeps a copy of every
// frame ReadExceptions hands to the vswitch.
type recordingNIC struct {
	hal.NIC
	mu     sync.Mutex
	frames [][]byte
}

func (r *recordingNIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	n, err := r.NIC.ReadExceptions(ctx, batch)
	r.mu.Lock()
	for i := 0; i < n; i++ {
		r.frames = append(r.frames, bytes.Clone(batch[i].Frame()))
	}
	r.mu.Unlock()
	return n, err
}

func (r *recordingNIC) exceptions() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.frames...)
}

// lockedBuffer collects the vswitch's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// host is host-a: its softnic, the recording decorator the vswitch runs
// on, the vswitch, and the far sides of the ports.
type host struct {
	t    *testing.T
	nic  *softnic.NIC
	rec  *recordingNIC
	sw   *vswitch.Switch
	logs *lockedBuffer
	clk  *testclock.Clock // the NIC's rotation clock
	far  map[hal.PortID]*softnic.Port
}

func newHost(t *testing.T, crypto bool) *host {
	t.Helper()
	st, err := policy.Parse("e2e.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.New(time.Unix(1_700_000_000, 0))
	h := startHost(t, st, softnic.Config{Crypto: crypto, SealRotationGrace: grace, SealClock: clk.Now}, nil,
		func(h *host, c *vswitch.Config) { c.Proactive = true })
	h.clk = clk
	return h
}

// startHost makes host-a's softnic from nc (its device name and ports a1,
// a2 and uplink set here) and runs a vswitch on st over the recorder,
// logging into h.logs; before, if not nil, runs first (the agent's part),
// and tweak, if not nil, adjusts the switch's configuration. Everything
// stops at cleanup.
func startHost(t *testing.T, st *policy.State, nc softnic.Config, before func(h *host), tweak func(h *host, c *vswitch.Config)) *host {
	t.Helper()
	nc.Device = "host-a"
	nc.Ports = []softnic.PortConfig{
		{Name: "a1", Kind: hal.PortVPort, MAC: macA1},
		{Name: "a2", Kind: hal.PortVPort, MAC: macA2},
		{Name: "uplink", Kind: hal.PortUplink, MAC: macUplnk, MTU: 1600},
	}
	nic, err := softnic.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, nic: nic, rec: &recordingNIC{NIC: nic}, logs: &lockedBuffer{}, far: map[hal.PortID]*softnic.Port{}}
	for _, id := range []hal.PortID{pA1, pA2, pUplink} {
		if h.far[id], err = nic.Port(id); err != nil {
			t.Fatal(err)
		}
	}
	if before != nil {
		before(h)
	}
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := vswitch.Config{NIC: h.rec, Host: "host-a", State: st,
		Ports: map[string]hal.PortID{"a1": pA1, "a2": pA2}, Uplink: pUplink, Logger: logger}
	if tweak != nil {
		tweak(h, &cfg)
	}
	if h.sw, err = vswitch.New(cfg); err != nil {
		nic.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.sw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vswitch Run: %v", err)
		}
		h.sw.Close()
		nic.Close()
	})
	return h
}

// channel connects the host's key agent to the NIC's over a unix socket
// with the secure channel; hostWire records everything the host's end of
// the socket carried.
type channel struct {
	host     *securechan.Conn
	hostWire *sealtest.Recorder
	seq      uint64
}

func connect(t *testing.T, nic *softnic.NIC) *channel {
	t.Helper()
	// The keys of the remote driver's channel, each side pinning the
	// other's; a short path (unix socket paths are limited to 108 bytes).
	k := remotetest.NewKeys(t)
	path := filepath.Join(remotetest.Dir(t, "se2e"), "chan")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// The NIC's agent: applies key messages to the softnic and acks them.
	agentDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			agentDone <- err
			return
		}
		conn, err := securechan.Server(c, &securechan.Config{PrivateKey: k.NICPriv, PeerKeys: []securechan.PublicKey{k.HostPub}})
		if err != nil {
			agentDone <- err
			return
		}
		defer conn.Close()
		for {
			var m securechan.Message
			if err := conn.Recv(&m); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, securechan.ErrClosed) || errors.Is(err, securechan.ErrTruncated) {
					err = nil
				}
				agentDone <- err
				return
			}
			ack := nic.HandleKeyMessage(context.Background(), &m)
			if err := conn.Send(&ack); err != nil {
				agentDone <- err
				return
			}
			if err := conn.Flush(); err != nil {
				agentDone <- err
				return
			}
		}
	}()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	rec := sealtest.Record(raw)
	conn, err := securechan.Client(rec, &securechan.Config{PrivateKey: k.HostPriv, PeerKeys: []securechan.PublicKey{k.NICPub}}, k.NICPub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		if err := <-agentDone; err != nil {
			t.Errorf("NIC agent: %v", err)
		}
	})
	return &channel{host: conn, hostWire: rec}
}

// request sends m and waits for its Ack.
func (c *channel) request(t *testing.T, m securechan.Message) securechan.Message {
	t.Helper()
	c.seq++
	m.Seq = c.seq
	if err := c.host.Send(&m); err != nil {
		t.Fatal(err)
	}
	if err := c.host.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		var r securechan.Message
		if err := c.host.Recv(&r); err != nil {
			t.Fatal(err)
		}
		if r.Type == securechan.MsgAck && r.AckSeq == m.Seq {
			return r
		}
	}
}

// registerVM makes a fresh key for the VM on port, registers it with the
// NIC over the channel under keyID and returns the VM's sealer.
func (c *channel) registerVM(t *testing.T, nicKey [32]byte, port hal.PortID, keyID uint8) *securechan.Sealer {
	t.Helper()
	pub, priv, err := securechan.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ack := c.request(t, securechan.Message{Type: securechan.MsgKeyRegister, Vport: uint32(port), KeyID: keyID, Key: pub})
	if ack.Status != securechan.AckOK {
		t.Fatalf("key %d for port %d: ack %v", keyID, port, ack.Status)
	}
	s, err := securechan.NewSealer(priv, nicKey, keyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func udp(srcMAC, dstMAC hal.MAC, src, dst netip.Addr, sp, dp uint16, payload string) []byte {
	return wire.Build(wire.FrameSpec{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst, Proto: hal.ProtoUDP,
		SrcPort: sp, DstPort: dp, Payload: []byte(payload)})
}

func seal(t *testing.T, s *securechan.Sealer, frame []byte) []byte {
	t.Helper()
	f, err := s.SealFrame(nil, frame)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (h *host) send(port hal.PortID, frames ...[]byte) {
	h.t.Helper()
	if _, err := h.far[port].Send(frames); err != nil {
		h.t.Fatal(err)
	}
}

// recv drains what the NIC sent out of port.
func (h *host) recv(port hal.PortID) [][]byte {
	h.t.Helper()
	var out [][]byte
	bufs := make([][]byte, 32)
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	for {
		k, err := h.far[port].Recv(bufs, sizes)
		if err != nil {
			h.t.Fatal(err)
		}
		for i := 0; i < k; i++ {
			out = append(out, bytes.Clone(bufs[i][:sizes[i]]))
		}
		if k < len(bufs) {
			return out
		}
	}
}

// waitRecv waits until port has emitted want frames (the vswitch runs on
// its own goroutine) and returns them.
func (h *host) waitRecv(port hal.PortID, want int) [][]byte {
	h.t.Helper()
	var out [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		out = append(out, h.recv(port)...)
		if len(out) < want {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if len(out) != want {
		h.t.Fatalf("port %d emitted %d frames, want %d", port, len(out), want)
	}
	return out
}

func (h *host) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func key(t *testing.T, f []byte) (hal.FlowKey, wire.Layout) {
	t.Helper()
	var k hal.FlowKey
	var l wire.Layout
	if err := wire.Parse(f, 0, &k, &l); err != nil {
		t.Fatalf("frame does not parse: %v", err)
	}
	return k, l
}

// checkToB1 checks that f is a1's frame toward b1, encapsulated toward
// host-b's PA with the VNET's VNI and b1's MAC inside.
func checkToB1(t *testing.T, f []byte, sp uint16) {
	t.Helper()
	k, _ := key(t, f)
	if k.TunKind != hal.EncapVXLAN || k.VNI != vni || hal.AddrFrom16(k.TunDst) != paHostB {
		t.Fatalf("not encapsulated toward host-b: %v", k)
	}
	if k.Dst() != caB1 || k.EthDst != macB1 || k.Src() != caA1 || k.L4Src != sp {
		t.Fatalf("inner frame: %v", k)
	}
}

// hostView is everything the host can see: the frames the exception path
// gave it, what the channel carried, the switch's flows, explanations,
// stats and logs.
func (h *host) hostView(ch *channel, sealedFrames [][]byte) map[string][]byte {
	view := map[string][]byte{}
	for i, f := range h.rec.exceptions() {
		view[fmt.Sprintf("exception %d", i)] = f
	}
	if ch != nil {
		r, w := ch.hostWire.Captured()
		view["channel read"], view["channel written"] = r, w
	}
	var b strings.Builder
	for _, f := range h.sw.Flows() {
		fmt.Fprintf(&b, "%+v\n", f)
		if e, ok := h.sw.ExplainFlow(f.ID); ok {
			b.WriteString(e.String())
		}
	}
	for _, f := range sealedFrames {
		// What the host would say if asked about a sealed frame.
		b.WriteString(h.sw.ExplainFrame(pA1, f).String())
	}
	st := h.sw.Stats()
	fmt.Fprintf(&b, "%+v\n", st)
	view["flows, explanations, stats"] = []byte(b.String())
	view["logs"] = []byte(h.logs.String())
	return view
}

func assertNoLeak(t *testing.T, view map[string][]byte) {
	t.Helper()
	for where, data := range view {
		for _, s := range secrets {
			if leak := sealtest.FindLeak(data, s); leak != "" {
				t.Errorf("%s reveals sealed destination %v: %s", where, s.IP, leak)
			}
		}
	}
}

// TestSealedEndToEnd: a1's key is registered over the channel, the vswitch
// has programmed the flows (per-destination rules toward b1, a unified flow
// from a first unsealed packet toward a2), and a1's sealed frames are
// routed by the NIC: to b1 encapsulated toward host-b, to a2 on its vport,
// and toward an address without any flow nowhere. Nothing the host saw
// reveals a sealed destination.
func TestSealedEndToEnd(t *testing.T) {
	h := newHost(t, true)
	if !h.rec.Capabilities().Crypto {
		t.Fatal("softnic with Crypto does not report it")
	}
	ch := connect(t, h.nic)
	sealer := ch.registerVM(t, h.nic.SealPublicKey(), pA1, 1)
	h.waitFor("per-destination rules", func() bool { return h.sw.Stats().ProactiveRules > 0 })

	// a1 → a2 unsealed first: the host walks the layers and offloads the
	// flow; a2's address is no secret.
	toA2 := udp(macA1, macA2, caA1, caA2, 4000, 53, "first")
	h.send(pA1, toA2)
	h.waitRecv(pA2, 1)
	h.waitFor("the a1→a2 flow on the NIC", func() bool { return h.sw.Stats().FlowsNIC > 0 })
	excBefore := len(h.rec.exceptions())

	// Sealed traffic.
	toB1 := udp(macA1, macB1, caA1, caB1, 5000, 80, "to b1, sealed")
	toA2s := udp(macA1, macA2, caA1, caA2, 4000, 53, "to a2, sealed")
	toNone := udp(macA1, macNone, caA1, caNone, 6000, 80, "to nobody, sealed")
	var sealed [][]byte
	for range 3 {
		sealed = append(sealed, seal(t, sealer, toB1), seal(t, sealer, toA2s), seal(t, sealer, toNone))
	}
	h.send(pA1, sealed...)

	// Let the switch run a while: anything queued for it would show.
	time.Sleep(50 * time.Millisecond)
	if n := len(h.rec.exceptions()); n != excBefore {
		t.Errorf("%d sealed frames took the exception path", n-excBefore)
	}
	view := h.hostView(ch, sealed)
	assertNoLeak(t, view)

	up := h.recv(pUplink)
	if len(up) != 3 {
		t.Fatalf("%d sealed frames reached the uplink, want 3", len(up))
	}
	for _, f := range up {
		checkToB1(t, f, 5000)
	}
	a2 := h.recv(pA2)
	if len(a2) != 3 {
		t.Fatalf("%d sealed frames reached a2, want 3", len(a2))
	}
	for _, f := range a2 {
		if !bytes.Equal(f, toA2s) {
			t.Fatalf("a2 got\n% x\nwant\n% x", f, toA2s)
		}
	}
	if got := len(h.recv(pA1)); got != 0 {
		t.Fatalf("%d frames came back to a1", got)
	}
	ss := h.nic.SealedStats()
	if ss.Opened != 9 || ss.NoFlow != 3 {
		t.Fatalf("sealed stats %+v: want 9 opened, 3 without a flow", ss)
	}
	st, err := h.nic.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops[hal.ReasonSealed] != 3 {
		t.Fatalf("NIC sealed drops %d, want 3 (the frames without a flow)", st.Drops[hal.ReasonSealed])
	}
	if len(view["channel written"]) == 0 || len(view["channel read"]) == 0 {
		t.Fatal("the channel recorded nothing: the leak check saw no traffic")
	}
	// The check can fail: the clear frame toward b1 does reveal it.
	if sealtest.FindLeak(toB1, secrets[0]) == "" {
		t.Fatal("FindLeak does not see b1 in its own clear frame")
	}
}

// TestSealedKeyRotation: key 2 is registered over the channel while a1
// keeps sending with key 1; every frame of either key inside the window is
// routed, then key 1 is refused and counted and key 2 goes on.
func TestSealedKeyRotation(t *testing.T) {
	h := newHost(t, true)
	ch := connect(t, h.nic)
	nicKey := h.nic.SealPublicKey()
	s1 := ch.registerVM(t, nicKey, pA1, 1)
	h.waitFor("per-destination rules", func() bool { return h.sw.Stats().ProactiveRules > 0 })
	toB1 := udp(macA1, macB1, caA1, caB1, 5000, 80, "rotating")

	// Key-1 traffic flows on its own goroutine while key 2 is registered.
	stop := make(chan struct{})
	sent1 := make(chan int)
	go func() {
		n := 0
		defer func() { sent1 <- n }()
		// At most 300 frames: with key 2's 50 they fit the uplink's ring
		// (1024) even if this test's drains are late on a loaded machine.
		for n < 300 {
			select {
			case <-stop:
				return
			default:
			}
			f, err := s1.SealFrame(nil, toB1)
			if err != nil {
				return
			}
			if _, err := h.far[pA1].Send([][]byte{f}); err != nil {
				return
			}
			n++
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var delivered int
	drain := func() { delivered += len(h.recv(pUplink)) }
	time.Sleep(5 * time.Millisecond)
	drain()
	s2 := ch.registerVM(t, nicKey, pA1, 2)
	if k := h.nic.SealKeys(pA1); len(k) != 2 {
		t.Fatalf("keys during the window: %+v", k)
	}
	var sent2 int
	for range 50 {
		h.send(pA1, seal(t, s2, toB1))
		sent2++
		drain()
	}
	time.Sleep(5 * time.Millisecond)
	close(stop)
	n1 := <-sent1
	drain()
	if n1 == 0 {
		t.Fatal("no key-1 frame was sent during the rotation")
	}
	if delivered != n1+sent2 {
		t.Fatalf("during the window %d of %d frames (%d key 1, %d key 2) were routed", delivered, n1+sent2, n1, sent2)
	}
	if ss := h.nic.SealedStats(); ss.Refused != ([securechan.NumDropReasons]uint64{}) {
		t.Fatalf("frames refused inside the window: %+v", ss)
	}

	// After the window: key 1 refused and counted, key 2 routed.
	h.clk.Advance(grace)
	h.send(pA1, seal(t, s1, toB1), seal(t, s2, toB1), seal(t, s1, toB1), seal(t, s2, toB1))
	up := h.recv(pUplink)
	if len(up) != 2 {
		t.Fatalf("after the window %d frames routed, want key 2's two", len(up))
	}
	for _, f := range up {
		checkToB1(t, f, 5000)
	}
	if ss := h.nic.SealedStats(); ss.Refused[securechan.DropUnknownKey] != 2 {
		t.Fatalf("expired key-1 frames counted %d, want 2 (%+v)", ss.Refused[securechan.DropUnknownKey], ss)
	}
	if k := h.nic.SealKeys(pA1); len(k) != 1 || k[0].KeyID != 2 {
		t.Fatalf("keys after the window: %+v", k)
	}
	assertNoLeak(t, h.hostView(ch, nil))
}

// TestSealedFailClosed: the same traffic on a softnic without crypto under
// the vswitch: every sealed frame is dropped and counted, none delivered,
// none opened (the NIC has no key table, the host none either).
func TestSealedFailClosed(t *testing.T) {
	h := newHost(t, false)
	if h.rec.Capabilities().Crypto {
		t.Fatal("Crypto reported without Config.Crypto")
	}
	if err := h.nic.RegisterSealKey(context.Background(), pA1, 1, [32]byte{1}); !errors.Is(err, hal.ErrNotSupported) {
		t.Fatalf("RegisterSealKey on a NIC without crypto: %v", err)
	}
	h.waitFor("per-destination rules", func() bool { return h.sw.Stats().ProactiveRules > 0 })
	// The VM seals to some NIC key; this NIC has none to open it with.
	_, vmPriv, _ := securechan.GenerateKey(nil)
	otherNIC, _, _ := securechan.GenerateKey(nil)
	sealer, err := securechan.NewSealer(vmPriv, otherNIC, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	toB1 := udp(macA1, macB1, caA1, caB1, 5000, 80, "sealed")
	toNone := udp(macA1, macNone, caA1, caNone, 6000, 80, "sealed")
	var sealed [][]byte
	for range 4 {
		sealed = append(sealed, seal(t, sealer, toB1), seal(t, sealer, toNone))
	}
	h.send(pA1, sealed...)
	time.Sleep(50 * time.Millisecond)
	for _, p := range []hal.PortID{pA1, pA2, pUplink} {
		if got := len(h.recv(p)); got != 0 {
			t.Fatalf("port %d emitted %d frames", p, got)
		}
	}
	st, err := h.nic.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drops[hal.ReasonSealed] != uint64(len(sealed)) {
		t.Fatalf("NIC sealed drops %d, want %d", st.Drops[hal.ReasonSealed], len(sealed))
	}
	if ss := h.nic.SealedStats(); ss != (softnic.SealedStats{}) {
		t.Fatalf("a NIC without crypto opened or inspected sealed frames: %+v", ss)
	}
	assertNoLeak(t, h.hostView(nil, sealed))
	// The host's own explanation says it fails closed.
	if e := h.sw.ExplainFrame(pA1, sealed[0]); !strings.Contains(e.String(), "fail closed") {
		t.Fatalf("explanation of a sealed frame on a NIC without crypto:\n%s", e)
	}
}

// sealedUpNIC is a NIC without crypto that, unlike softnic, hands sealed
// frames to the host (as a NIC that does not know the EtherType would, as
// a miss). The vswitch must drop and count them without opening them.
type sealedUpNIC struct {
	hal.NIC
	mu      sync.Mutex
	pending []hal.Exception
}

func (s *sealedUpNIC) push(port hal.PortID, frames ...[]byte) {
	s.mu.Lock()
	for _, f := range frames {
		s.pending = append(s.pending, hal.Exception{InPort: port, Reason: hal.ReasonMiss, Buf: bytes.Clone(f), Len: len(f)})
	}
	s.mu.Unlock()
}

func (s *sealedUpNIC) ReadExceptions(ctx context.Context, batch []hal.Exception) (int, error) {
	s.mu.Lock()
	n := 0
	for ; n < len(batch) && len(s.pending) > 0; n++ {
		e := s.pending[0]
		s.pending = s.pending[1:]
		buf := batch[n].Buf
		e.Len = copy(buf, e.Frame())
		e.Buf = buf
		batch[n] = e
	}
	s.mu.Unlock()
	if n > 0 {
		return n, nil
	}
	return s.NIC.ReadExceptions(ctx, batch)
}

// TestSealedFailClosedInHost: sealed frames that a crypto-less NIC passes up
// (as misses, plain or VLAN-tagged) are dropped and counted by the vswitch
// (its "sealed" drop reason), never delivered.
func TestSealedFailClosedInHost(t *testing.T) {
	st, err := policy.Parse("e2e.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	nic, err := softnic.New(softnic.Config{Ports: []softnic.PortConfig{
		{Name: "a1", Kind: hal.PortVPort, MAC: macA1},
		{Name: "a2", Kind: hal.PortVPort, MAC: macA2},
		{Name: "uplink", Kind: hal.PortUplink, MAC: macUplnk, MTU: 1600},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	up := &sealedUpNIC{NIC: nic}
	logs := &lockedBuffer{}
	sw, err := vswitch.New(vswitch.Config{NIC: up, Host: "host-a", State: st, Ports: map[string]hal.PortID{"a1": pA1, "a2": pA2},
		Uplink: pUplink, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	_, vmPriv, _ := securechan.GenerateKey(nil)
	nicPub, _, _ := securechan.GenerateKey(nil)
	sealer, err := securechan.NewSealer(vmPriv, nicPub, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := seal(t, sealer, udp(macA1, macB1, caA1, caB1, 5000, 80, "sealed"))
	tagged := wire.Build(wire.FrameSpec{SrcMAC: macA1, DstMAC: securechan.SealedDstMAC, VLAN: 7, EthType: securechan.EtherTypeSealed, Payload: plain[14:]})
	up.push(pA1, plain, tagged, plain)
	batch := make([]hal.Exception, 8)
	for i := range batch {
		batch[i].Buf = make([]byte, 2048)
	}
	n, err := up.ReadExceptions(context.Background(), batch)
	if err != nil || n != 3 {
		t.Fatalf("read %d exceptions: %v", n, err)
	}
	if err := sw.HandleBatch(context.Background(), batch[:n]); err != nil {
		t.Fatal(err)
	}
	if d := sw.Stats().Drops[vswitch.DropSealed.String()]; d != 3 {
		t.Fatalf("vswitch sealed drops %d, want 3 (%v)", d, sw.Stats().Drops)
	}
	for _, p := range []hal.PortID{pA1, pA2, pUplink} {
		fp, _ := nic.Port(p)
		if k := fp.Pending(); k != 0 {
			t.Fatalf("port %d emitted %d frames", p, k)
		}
	}
	for _, f := range sw.Flows() {
		t.Fatalf("a sealed frame made a flow: %+v", f)
	}
	for _, s := range secrets {
		if leak := sealtest.FindLeak([]byte(logs.String()), s); leak != "" {
			t.Fatalf("logs reveal %v: %s", s.IP, leak)
		}
	}
}
