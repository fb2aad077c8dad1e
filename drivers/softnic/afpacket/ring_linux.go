//go:build linux

package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nicpath/nicpath/hal/wire"
)

// rxRing is the socket's receive ring (PACKET_RX_RING, TPACKET_V2): frames
// the kernel writes into memory shared with the binding, each in a slot
// with its own status word, so that a burst is read with no system call
// and no copy, and an empty ring costs one poll(2). A frame longer than a
// slot (a GSO super-frame of up to 64 KB) is also queued whole on the
// socket (PACKET_COPY_THRESH): its slot says so (TP_STATUS_COPY), and the
// reader takes it with recvmsg.
//
// Why TPACKET_V2 and not V3's blocks: V3 hands a block to user space when
// it is full or when its retire timer (at least 1 ms) fires, so a lone
// frame waits up to that long; every hop of a new connection's handshake
// is a lone frame. V2 wakes the reader per frame, as recvmsg did.
type rxRing struct {
	mem       []byte
	frameSize int
	perBlock  int
	blockSize int
	n         int // frames
	next      int // the next slot to read
}

// Ring geometry: slots of ringFrameSize bytes (a frame of up to 1,994
// bytes after the slot's headers: any MTU-sized frame of a port with a
// 1500-byte MTU, VLAN tags and a tunnel's outer headers included; longer
// ones take the copy path), ringBlockSize blocks (the kernel's unit of
// allocation), ringFrames slots: 2 MiB per binding.
const (
	ringFrameSize = 2048
	ringBlockSize = 1 << 16
	ringFrames    = 1024
)

// tpacket2_hdr's fields (linux/if_packet.h) and the sockaddr_ll after it.
const (
	tpStatus    = 0
	tpLen       = 4
	tpSnaplen   = 8
	tpMac       = 12
	tpVlanTCI   = 24
	tpVlanTPID  = 26
	tpHdrLen    = 32 // TPACKET_ALIGN(sizeof(struct tpacket2_hdr))
	sllPkttype  = tpHdrLen + 10
	tpAlignment = 16
)

// ringGeometry lays out a ring of at least frames slots of at least need
// bytes each (ringFrameSize at least, aligned): the slot's size, the
// block's (a power-of-two multiple of ringBlockSize holding one slot at
// least), slots per block and blocks.
func ringGeometry(need, frames int) (frameSize, blockSize, perBlock, blocks int) {
	frameSize = ringFrameSize
	if need > frameSize {
		frameSize = (need + tpAlignment - 1) &^ (tpAlignment - 1)
	}
	blockSize = ringBlockSize
	for blockSize < frameSize {
		blockSize *= 2
	}
	perBlock = blockSize / frameSize
	blocks = (frames + perBlock - 1) / perBlock
	return frameSize, blockSize, perBlock, blocks
}

// setupRing sets fd's receive ring up; the socket is bound and has
// PACKET_VNET_HDR. Frames that arrived before the ring are dropped from
// the socket's queue: from then on, the queue holds only the copies of
// frames too long for a slot, in the ring's order.
func setupRing(fd int, mtu int) (*rxRing, error) {
	// Room for the slot's headers, the virtio-net header, the largest
	// frame of the port's MTU with two VLAN tags, and a tunnel's outer
	// headers: beyond it, frames take the copy path.
	frameSize, blockSize, perBlock, blocks := ringGeometry(tpHdrLen+32+wire.VirtioNetHdrLen+mtu+64+8, ringFrames)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION: %w", err)
	}
	// Any non-zero threshold: a frame longer than its slot is also queued
	// whole (while the socket's receive buffer has room).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1); err != nil {
		return nil, fmt.Errorf("PACKET_COPY_THRESH: %w", err)
	}
	req := unix.TpacketReq{Block_size: uint32(blockSize), Block_nr: uint32(blocks), Frame_size: uint32(frameSize),
		Frame_nr: uint32(blocks * perBlock)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, blockSize*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap of the receive ring: %w", err)
	}
	// What was queued before the ring: frames of the binding's start.
	buf := make([]byte, 1<<16+wire.VirtioNetHdrLen+512)
	for {
		_, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if err != nil {
			break
		}
	}
	return &rxRing{mem: mem, frameSize: frameSize, perBlock: perBlock, blockSize: blockSize, n: blocks * perBlock}, nil
}

// slot returns the i-th slot's memory.
func (r *rxRing) slot(i int) []byte {
	off := (i/r.perBlock)*r.blockSize + (i%r.perBlock)*r.frameSize
	return r.mem[off : off+r.frameSize : off+r.frameSize]
}

func statusWord(s []byte) *uint32 { return (*uint32)(unsafe.Pointer(&s[tpStatus])) }

// ready returns the slot at next when the kernel handed it to user space.
func (r *rxRing) ready() ([]byte, uint32, bool) {
	s := r.slot(r.next)
	st := atomic.LoadUint32(statusWord(s))
	return s, st, st&unix.TP_STATUS_USER != 0
}

// release gives the oldest n slots read back to the kernel, in order.
func (r *rxRing) release(first, n int) {
	for i := 0; i < n; i++ {
		atomic.StoreUint32(statusWord(r.slot((first+i)%r.n)), unix.TP_STATUS_KERNEL)
	}
}

func (r *rxRing) close() error { return unix.Munmap(r.mem) }

// errCopy says the slot holds a truncated frame whose whole copy waits on
// the socket's queue.
var errCopy = errors.New("afpacket: frame on the copy path")

// frame returns the frame in slot s (status st) with its virtio-net header,
// the VLAN tag the kernel moved into the slot's header put back in place
// (in the slot: the MAC addresses move 4 bytes toward the virtio-net
// header, which has been read). It reports skip for a frame to ignore
// (one the host sent out, should PACKET_IGNORE_OUTGOING be missing),
// errCopy for one on the copy path, and an error for a frame cut short.
func slotFrame(s []byte, st uint32) (f []byte, h wire.VirtioNetHdr, skip bool, err error) {
	if s[sllPkttype] == unix.PACKET_OUTGOING {
		return nil, h, true, nil
	}
	l := int(binary.NativeEndian.Uint32(s[tpLen:]))
	snap := int(binary.NativeEndian.Uint32(s[tpSnaplen:]))
	mac := int(binary.NativeEndian.Uint16(s[tpMac:]))
	if st&unix.TP_STATUS_COPY != 0 {
		return nil, h, false, errCopy
	}
	if snap < l || mac < tpHdrLen+wire.VirtioNetHdrLen+4 || mac+snap > len(s) {
		return nil, h, false, errFrameCut
	}
	h = wire.DecodeVirtioNetHdr(s[mac-wire.VirtioNetHdrLen:])
	f = s[mac : mac+snap]
	if st&unix.TP_STATUS_VLAN_VALID == 0 || snap < 12 {
		return f, h, false, nil
	}
	tpid := uint16(0x8100)
	if st&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
		tpid = binary.NativeEndian.Uint16(s[tpVlanTPID:])
	}
	tci := binary.NativeEndian.Uint16(s[tpVlanTCI:])
	f = s[mac-4 : mac+snap]
	copy(f, f[4:16])
	binary.BigEndian.PutUint16(f[12:], tpid)
	binary.BigEndian.PutUint16(f[14:], tci)
	// The kernel counted from the untagged frame.
	if h.NeedsCsum() {
		h.CsumStart += wire.VLANTagLen
	}
	if h.HdrLen > 0 {
		h.HdrLen += wire.VLANTagLen
	}
	return f, h, false, nil
}

// errFrameCut is a frame the ring holds only part of, without a copy (the
// socket's receive buffer was full): it is lost.
var errFrameCut = errors.New("afpacket: frame longer than the ring's slot, and no copy")

// ringWaiter parks the reader's goroutine in Go's network poller until the
// ring has a frame, rather than block a thread in poll(2): a thread
// blocked in a system call holds on to a scheduler's processor until the
// runtime's monitor takes it back (it wakes every 20 µs while any is
// blocked so), and the thread that returns must find a processor again;
// measured here, those were a sixth of the binding's CPU under a
// connection-per-second load. The poller watches the socket itself,
// through a duplicate of its descriptor made non-blocking (which makes the
// socket so: the binding only ever reads it without waiting, and sends on
// a socket of its own), so that a frame wakes the reader through one
// epoll instance, the poller's. An instance of the binding's own in
// between, watched by the poller, cost a second wake-up callback in the
// sender's softirq for every frame and a second poll of the socket for
// every wake-up.
type ringWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

func newRingWaiter(sockfd int) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(sockfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup of the socket: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking: os.NewFile hands it to the poller.
	f := os.NewFile(uintptr(fd), "afpacket ring")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ringWaiter{f: f, rc: rc}, nil
}

// wait returns once ready reports true, checking it whenever the socket
// gets a frame; it returns an error once close was called. ready has
// RawConn.Read's signature (its argument unused), so that a wait
// allocates no closure around it.
func (w *ringWaiter) wait(ready func(uintptr) bool) error {
	return w.rc.Read(ready)
}

// close wakes a wait in progress (with an error) and closes the duplicate
// descriptor (the socket stays open).
func (w *ringWaiter) close() error { return w.f.Close() }
