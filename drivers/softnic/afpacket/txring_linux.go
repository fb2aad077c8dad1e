//go:build linux

package afpacket

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal/wire"
	rawsock "github.com/nicpath/nicpath/internal/afpacket"
)

// txRing is the binding's transmit ring (PACKET_TX_RING, TPACKET_V2), on a
// send-only socket of its own: frames are copied into slots of memory
// shared with the kernel, and one send(2) with no data has the kernel send
// every slot marked for sending, in order, through the interface's
// qdiscs and taps as any frame the socket sent (no PACKET_QDISC_BYPASS: a
// tcpdump on the interface sees them, a qdisc applies). The kernel builds
// each frame's buffer around the slot's memory rather than a copy of it;
// a veth (the receiving namespace's side) copies it out before handing it
// on (skb_copy_ubufs: a page per frame), and the slot returns to user
// space when the kernel frees or orphans that buffer.
//
// Measured under peerbed's CPS load, against sendmmsg on a socket of the
// same kind: the binding's process took about a sixth less CPU per
// connection (95 to 78 µs), the receiving VMs' processes about 7 µs more
// (the veth's page is theirs to free, and their stack pulls the headers
// the buffer's linear part lacks), 11 µs less in all. In perf, what fell
// in the binding's process was scheduling (__schedule from 12% of its
// samples to 5%, Go's findRunnable from 8% to 4.5%). A send of several
// frames is common there (most of the binding's sends under that load),
// and sendmmsg has a rescheduling point after each message, where the VM's
// thread the first frame woke took the processor before the next frame
// went; the ring's send(2) puts every frame through before it returns. One
// sendmsg per single frame (sendmmsg for the rest) measured no better than
// sendmmsg.
type txRing struct {
	sock      *rawsock.Socket
	mem       []byte
	frameSize int
	perBlock  int
	blockSize int
	n         int
	// next is the slot the next frame goes into; unsent the oldest slot
	// marked for sending that the kernel has not taken (equal to next
	// when none is: flush leaves none).
	next, unsent int
	// refusedAt is the slot flush made the kernel skip, until it has
	// (-1: none).
	refusedAt int
	// maxFrame is the longest frame a slot takes: the slot's room, and
	// what the kernel lets through the ring for the interface's MTU at
	// Bind (it drops a longer one without a word to the sender). Longer
	// frames go out with sendmmsg, which reports a refusal.
	maxFrame int
}

// txRingFrames is the ring's slot count: 512 KiB per binding of 2 KiB
// slots for a port's MTU up to 1500 bytes. A frame that finds its slot
// still in the kernel's hands (the receiver holds it) goes out with
// sendmmsg.
const txRingFrames = 256

// txDataOff is where a frame starts in its slot: after the tpacket2_hdr,
// aligned (TPACKET2_HDRLEN less the sockaddr_ll, which the kernel does not
// read on transmit).
const txDataOff = tpHdrLen

// setupTxRing opens a send-only socket on ifname with a transmit ring for
// frames of the port's MTU (mtu).
func setupTxRing(ifname string, mtu int) (*txRing, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	s, err := rawsock.Open(ifname, rawsock.Options{SendOnly: true})
	if err != nil {
		return nil, err
	}
	fd := s.FD()
	// The port's frames: its MTU, an Ethernet header, two VLAN tags, a
	// tunnel's outer headers.
	frameSize, blockSize, perBlock, blocks := ringGeometry(txDataOff+mtu+64+8, txRingFrames)
	fail := func(what string, err error) (*txRing, error) {
		s.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("PACKET_VERSION", err)
	}
	// A slot the kernel finds malformed is skipped rather than stopping
	// the ring for good (TP_STATUS_WRONG_FORMAT); maxFrame keeps such
	// frames out of it.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_LOSS, 1); err != nil {
		return fail("PACKET_LOSS", err)
	}
	// A send that waits (the socket's send buffer is full) waits for the
	// frames it sent to be freed as well: never longer than a read waits.
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fail("SO_SNDTIMEO", err)
	}
	req := unix.TpacketReq{Block_size: uint32(blockSize), Block_nr: uint32(blocks), Frame_size: uint32(frameSize),
		Frame_nr: uint32(blocks * perBlock)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail("PACKET_TX_RING", err)
	}
	mem, err := unix.Mmap(fd, 0, blockSize*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("mmap of the transmit ring", err)
	}
	// tpacket_snd's bound: the device's MTU, its Ethernet header and a
	// VLAN tag.
	maxFrame := min(frameSize-txDataOff, ifi.MTU+wire.EthHeaderLen+wire.VLANTagLen)
	return &txRing{sock: s, mem: mem, frameSize: frameSize, perBlock: perBlock, blockSize: blockSize,
		n: blocks * perBlock, maxFrame: maxFrame, refusedAt: -1}, nil
}

func (r *txRing) slot(i int) []byte {
	off := (i/r.perBlock)*r.blockSize + (i%r.perBlock)*r.frameSize
	return r.mem[off : off+r.frameSize : off+r.frameSize]
}

// send puts the frames into the ring, in order, as long as each fits its
// slot and finds it free, and has the kernel send what the ring holds. It
// returns how many of frames it put in the ring (the caller sends the rest
// another way, after them), how many the kernel sent, and how many it
// refused (dropped: see flush), with the last refusal's error.
func (r *txRing) send(frames [][]byte) (put, sent, refused int, err error) {
	for _, f := range frames {
		s := r.slot(r.next)
		if len(f) > r.maxFrame || atomic.LoadUint32(statusWord(s)) != unix.TP_STATUS_AVAILABLE {
			break
		}
		copy(s[txDataOff:], f)
		binary.NativeEndian.PutUint32(s[tpLen:], uint32(len(f)))
		atomic.StoreUint32(statusWord(s), unix.TP_STATUS_SEND_REQUEST)
		r.next = (r.next + 1) % r.n
		put++
	}
	if r.unsent == r.next {
		return put, 0, 0, nil
	}
	sent, refused, err = r.flush()
	return put, sent, refused, err
}

// flush has the kernel send the slots marked for sending: without waiting
// first, as a raw system call (see rawsock's sendLocked for why), and,
// when the socket's send buffer is full, waiting for room as sendmmsg
// would have. The kernel takes the slots in order and stops at one it
// could not send (the link is down, a qdisc dropped it), which it leaves
// marked, to be tried again by the next call: a qdisc that drops a frame
// for good (a tc drop rule) would stop the ring there. Such a frame is
// refused, as sendmmsg refuses it: its length is made one the kernel
// rejects, which, the ring losing malformed frames (PACKET_LOSS), has it
// skip the slot, and the frames after it go on.
func (r *txRing) flush() (sent, refused int, err error) {
	fd := uintptr(r.sock.FD())
	for r.unsent != r.next {
		wait := false
		var e unix.Errno
		for {
			if wait {
				_, _, e = unix.Syscall6(unix.SYS_SENDTO, fd, 0, 0, 0, 0, 0)
			} else {
				_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, 0, 0, unix.MSG_DONTWAIT, 0, 0)
			}
			if e == unix.EINTR {
				continue
			}
			if e == unix.EAGAIN && !wait {
				wait = true
				continue
			}
			break
		}
		for r.unsent != r.next && atomic.LoadUint32(statusWord(r.slot(r.unsent))) != unix.TP_STATUS_SEND_REQUEST {
			if r.unsent == r.refusedAt {
				r.refusedAt = -1 // skipped, not sent
			} else {
				sent++
			}
			r.unsent = (r.unsent + 1) % r.n
		}
		if e == 0 || r.unsent == r.next {
			if e != 0 {
				err = e
			}
			break
		}
		err = e
		if r.refusedAt == r.unsent {
			// Not even the refused frame was skipped: the call failed
			// before the ring (the frames wait for the next call).
			break
		}
		// The kernel stopped at r.unsent: refuse that frame.
		r.refusedAt = r.unsent
		binary.NativeEndian.PutUint32(r.slot(r.unsent)[tpLen:], 0)
		refused++
	}
	return sent, refused, err
}

func (r *txRing) close() {
	unix.Munmap(r.mem)
	r.sock.Close()
}
