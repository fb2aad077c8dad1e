package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/nicpath/nicpath/hal"
)

// capturer writes the exception path to a pcapng file: one pcapng
// interface per NIC port (named after it), each packet as the NIC handed it
// to the host, with a comment giving the reason, the VNI and the rule.
// tshark and Wireshark read it (`tshark -r file -T fields -e frame.comment`).
type capturer struct {
	mu      sync.Mutex
	f       *os.File
	buf     *bufio.Writer
	w       *pcapgo.NgWriter
	file    string
	packets uint64
	ifIndex map[hal.PortID]int
	d       *Agent
}

var errNoCapture = errors.New("no capture is running")

// start opens path (created or truncated) and starts writing.
func (c *capturer) start(path string, ports []hal.Port) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w != nil {
		return fmt.Errorf("a capture to %s is already running; stop it first", c.file)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	buf := bufio.NewWriter(f)
	idx := map[hal.PortID]int{}
	var w *pcapgo.NgWriter
	for i, p := range ports {
		intf := pcapgo.NgInterface{Name: c.d.portLabel(p), Description: fmt.Sprintf("%s port %d (%s) of %s, exception path",
			p.Kind, p.ID, p.Name, c.d.cfg.Host), LinkType: layers.LinkTypeEthernet, SnapLength: 0,
			TimestampResolution: 9, OS: "nicpath vswitchd"}
		if i == 0 {
			w, err = pcapgo.NewNgWriterInterface(buf, intf, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
				Application: "nicpath vswitchd", Comment: "exception path of host " + c.d.cfg.Host}})
			if err != nil {
				f.Close()
				return err
			}
			idx[p.ID] = 0
			continue
		}
		id, err := w.AddInterface(intf)
		if err != nil {
			f.Close()
			return err
		}
		idx[p.ID] = id
	}
	if w == nil {
		f.Close()
		return errors.New("the NIC has no ports")
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	c.f, c.buf, c.w, c.file, c.packets, c.ifIndex = f, buf, w, path, 0, idx
	return nil
}

// write appends a batch of exceptions; a failing write stops the capture
// (and is logged) rather than slow the exception path down.
func (c *capturer) write(batch []hal.Exception) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return
	}
	now := time.Now()
	for i := range batch {
		e := &batch[i]
		fr := e.Frame()
		length := len(fr)
		ci := gopacket.CaptureInfo{Timestamp: now, CaptureLength: len(fr), Length: length, InterfaceIndex: c.ifIndex[e.InPort]}
		comment := fmt.Sprintf("reason=%s in_port=%d", e.Reason, e.InPort)
		if e.VNI != 0 {
			comment += fmt.Sprintf(" vni=%d", e.VNI)
		}
		if e.Rule != 0 {
			comment += fmt.Sprintf(" rule=%d", e.Rule)
		}
		if e.Truncated {
			comment += " truncated"
		}
		if err := c.w.WritePacketWithOptions(ci, fr, pcapgo.NgPacketOptions{Comments: []string{comment}}); err != nil {
			c.d.log.Error("capture write failed; capture stopped", "file", c.file, "err", err)
			c.closeLocked()
			return
		}
		c.packets++
		c.d.metrics.captured.Inc()
	}
	// Flushed per batch: the exception path is the slow path, and a reader
	// (tshark on the file) sees packets as they come.
	if err := c.w.Flush(); err != nil {
		c.d.log.Error("capture flush failed; capture stopped", "file", c.file, "err", err)
		c.closeLocked()
	}
}

// stop finishes the file and returns how many packets it holds.
func (c *capturer) stop() (string, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return "", 0, errNoCapture
	}
	file, n := c.file, c.packets
	err := c.closeLocked()
	return file, n, err
}

func (c *capturer) closeLocked() error {
	err := c.w.Flush()
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	c.w, c.f, c.buf = nil, nil, nil
	return err
}

func (c *capturer) status() (string, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.file, c.packets, c.w != nil
}
