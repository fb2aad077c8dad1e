package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"time"

	"github.com/nicpath/nicpath/internal/afpacket"
	"github.com/nicpath/nicpath/internal/nsexec"
)

// frameWatch counts the frames a VM sends on its eth0, and those larger
// than its MTU: segmentation offload super-frames (TSO/GSO), which the
// VM's kernel hands its interface whole when the interface takes them, and
// which the host's NIC must then segment (softnic does; the kernel takes
// the offload off a veth whose peer runs an XDP program, and the VM's
// stack segments itself). A packet socket sees what the interface is
// given, after any software segmentation.
type frameWatch struct {
	mac     []byte
	mtu     int
	sock    *afpacket.Socket
	openErr error
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	mu                    sync.Mutex
	frames, over, largest int
}

// watchFrames starts watching what the VM with MAC mac sends on dev (whose
// MTU is mtu) in its namespace ns.
func watchFrames(ns, dev string, mac []byte, mtu int) *frameWatch {
	w := &frameWatch{mtu: mtu, mac: mac}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.openErr = nsexec.Do(filepath.Join("/run/netns", ns), func() error {
		s, err := afpacket.Open(dev, afpacket.Options{PollInterval: 20 * time.Millisecond})
		w.sock = s
		return err
	})
	if w.openErr != nil {
		return w
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		buf := make([]byte, 128<<10)
		for ctx.Err() == nil {
			f, err := w.sock.Recv(buf)
			if errors.Is(err, afpacket.ErrTimeout) {
				continue
			}
			if err != nil {
				return
			}
			if len(f) < 14 || !bytes.Equal(f[6:12], w.mac) {
				continue
			}
			w.mu.Lock()
			w.frames++
			if len(f) > 14+w.mtu {
				w.over++
			}
			w.largest = max(w.largest, len(f))
			w.mu.Unlock()
		}
	}()
	return w
}

// stop ends the watch and returns the frames seen, those over the MTU and
// the largest frame's length.
func (w *frameWatch) stop() (frames, over, largest int, err error) {
	w.once.Do(func() {
		w.cancel()
		w.wg.Wait()
		if w.sock != nil {
			w.sock.Close()
		}
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frames, w.over, w.largest, w.openErr
}
