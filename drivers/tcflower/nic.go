package tcflower

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/netlink"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/learn"
	"github.com/nicpath/nicpath/hal/wire"
)

var (
	_ hal.NIC            = (*NIC)(nil)
	_ hal.AddressLearner = (*NIC)(nil)
)

// maxScopes is how many scopes fit the kernel's limit on chain jumps per
// packet: __tcf_classify gives up (and drops) after 16 jumps
// (max_reclassify_loop). A packet takes one jump from chain 0 to the first
// scope's dispatch chain and two per scope after that (dispatch chain to the
// active generation's chain, its tail to the next dispatch chain): 1 + 2×7 =
// 15.
const maxScopes = 7

// chunkOps bounds the messages of one sendmsg: each filter message is a few
// hundred bytes and the socket's send buffer is 4 MiB at most (see
// open_linux.go), so 1024 messages stay well inside it while a batch still
// costs one system call per thousand rules.
const chunkOps = 1024

// Structural filters: priorities and handle.
const (
	prioSealed   = 1      // chain 0: drop sealed-address frames, first
	prioHead     = 4      // chain 0: jump to the first scope's dispatch chain (after the tunnel endpoint's filters, tunnel.go)
	prioDispatch = 1      // the only filter of a dispatch chain
	prioTail     = 0xffff // after every rule of a generation chain
	structHandle = 1      // handle of the structural filters
)

// installed is a rule the kernel holds.
type installed struct {
	rule   hal.Rule
	chain  uint32
	prio   uint16
	handle uint32
	// ttlChain is a DecTTL rule's own chain (see ttlFilters); 0 for others.
	ttlChain uint32
}

// scopeState is one scope's chains: dispatch holds one filter that jumps to
// the active generation's chain.
type scopeState struct {
	scope    hal.Scope
	dispatch uint32
	active   hal.Generation
	gens     map[hal.Generation]uint32
}

// NIC is a tc-flower NIC: a shared tc block on the ingress (clsact) of every
// port and tunnel device, holding the rules as flower filters. See the
// package doc.
type NIC struct {
	cfg   Config
	conn  *netlink.Conn
	block uint32
	flags uint32 // TCA_CLS_FLAGS_* every filter gets
	caps  hal.Capabilities
	lay   layout
	devs  []*device // every device the block is attached to
	ports []hal.Port
	sys   sysOps // OS-specific parts (injection); nil in unit tests
	// base holds each port's interface counters at Open: PortCounters
	// reports what passed since, not since the interface was created.
	base map[hal.PortID]linkStats
	// exc is the exception path; nil when Open could not build it.
	exc *exceptionPath
	// hostSlots names the ToHost rules in the frames' reason tags.
	hostSlots hostSlots
	// tunPorts are the UDP ports the tunnel devices receive on;
	// tunPortByKind says which is whose.
	tunPorts      []uint16
	tunPortByKind map[hal.EncapKind]uint16
	// groups joins an endpoint's multicast groups; nil in unit tests.
	groups groupJoiner
	// stopped is set by Close before anything else, so that a reader
	// blocked in ReadExceptions (which never takes mu) leaves.
	stopped atomic.Bool
	// learn learns from the exceptions ReadExceptions reads (learn.go).
	learn *learn.Learner

	// readMu serialises ReadExceptions; excBuf is its receive buffer and
	// tmpls its templates of tunnelled misses' outer headers.
	readMu sync.Mutex
	excBuf []byte
	tmpls  map[tmplKey]*wire.EncapTemplate
	// hashKey and hashLay are innerHash's scratch.
	hashKey hal.FlowKey
	hashLay wire.Layout

	mu         sync.Mutex
	closed     bool
	rules      map[hal.RuleID]*installed
	scopes     []*scopeState // sorted by scope
	nextChain  uint32
	nextHandle uint32
	headTarget uint32 // dispatch chain chain 0 jumps to; 0 = none yet
	// endpoints are the uplinks' tunnel endpoints (tunnel.go);
	// retiredNotLocal the not-local drops of endpoints since removed.
	endpoints       map[hal.PortID]*endpointState
	retiredNotLocal map[hal.PortID]uint64
	// epAddrs is the endpoints' addresses for the exception reader
	// (publishEndpoints).
	epAddrs atomic.Pointer[map[netip.Addr]epTarget]
}

// sysOps are what the NIC needs from the OS beyond netlink.
type sysOps interface {
	inject(ifindex uint32, frames [][]byte) error
	close() error
}

func newNIC(conn *netlink.Conn, cfg Config, block, flags uint32, lay layout, devs []*device) *NIC {
	n := &NIC{
		cfg: cfg, conn: conn, block: block, flags: flags, lay: lay, devs: devs,
		rules: map[hal.RuleID]*installed{}, nextChain: 1, nextHandle: 1,
		endpoints: map[hal.PortID]*endpointState{}, retiredNotLocal: map[hal.PortID]uint64{},
		learn: learn.New(),
	}
	for _, d := range devs {
		if d.ID != 0 {
			n.ports = append(n.ports, hal.Port{ID: d.ID, Name: d.Name, Kind: d.Kind, MAC: d.MAC, MTU: d.MTU})
		}
	}
	sort.Slice(n.ports, func(i, j int) bool { return n.ports[i].ID < n.ports[j].ID })
	return n
}

// Capabilities returns what Open verified on the device.
func (n *NIC) Capabilities() hal.Capabilities {
	c := n.caps
	c.Notes = append([]string(nil), c.Notes...)
	return c
}

// Ports returns the ports, in ID order.
func (n *NIC) Ports() []hal.Port { return append([]hal.Port(nil), n.ports...) }

// Block returns the index of the shared tc block holding the rules (for
// `tc filter show block N`).
func (n *NIC) Block() uint32 { return n.block }

// Close removes the clsact qdiscs the driver added, which destroys the
// shared block and every filter in it, deletes the exception channel and
// releases the sockets. A ReadExceptions blocked across Close returns
// hal.ErrClosed, as do later calls.
func (n *NIC) Close() error {
	n.stopped.Store(true)
	if n.learn != nil {
		n.learn.Close()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	n.closed = true
	var errs []error
	if n.exc != nil {
		// The reader notices stopped within its poll interval; the
		// socket closes once it has left.
		n.readMu.Lock()
		errs = append(errs, n.exc.reader.close())
		n.readMu.Unlock()
		if n.exc.closeTunnel != nil {
			errs = append(errs, n.exc.closeTunnel())
		}
		err := n.do(n.request(rtmDelLink, 0, encodeDelLink(n.exc.txIfindex)))
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && (ke.Errno == errnoENOENT || ke.Errno == errnoENODEV) {
			err = nil // someone deleted it already
		}
		if err != nil {
			errs = append(errs, opError("delete the exception channel "+n.exc.txName, 0, err))
		}
	}
	for _, d := range n.devs {
		b, err := encodeQdisc(d.Ifindex, n.block, false)
		if err == nil {
			err = n.do(n.request(rtmDelQdisc, 0, b))
		}
		// A device that is gone took its qdisc with it.
		var ke *KernelError
		if errors.As(kernelError(err), &ke) && (ke.Errno == errnoENOENT || ke.Errno == errnoENODEV) {
			err = nil
		}
		if err != nil {
			errs = append(errs, opError("remove qdisc from "+d.Name, 0, err))
		}
	}
	n.rules = nil
	errs = append(errs, n.closeEndpoints())
	if n.sys != nil {
		errs = append(errs, n.sys.close())
	}
	errs = append(errs, n.conn.Close())
	return errors.Join(errs...)
}

func putU32(b []byte, v uint32) { binary.NativeEndian.PutUint32(b, v) }
