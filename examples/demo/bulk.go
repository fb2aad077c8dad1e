package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// Bulk TCP: a client connects to a served TCP port, sends "bulk <size>
// <seed>" and size bytes of a pseudo-random stream drawn from seed; the
// server reads all size bytes, checking every one, answers with a line
// that says whether they arrived intact, then (when they did) sends size
// bytes of the stream of seed+1, which the client checks in turn. A few
// megabytes each way make the kernels send segmentation offload frames
// (TSO/GSO, partial checksums) through the vswitch, which a few short
// segments never do: a frame cut wrong, a checksum left partial or a
// segment lost shows as a corrupt or missing byte.
//
// The server's verdict line is what an exchange ends on. The server reads
// the whole request before it answers, even past a wrong byte, so a client
// is not cut off while sending; when it answers early all the same (the
// request stopped short, its deadline passed) it sends the verdict before
// it closes, and a client whose sending fails reads that verdict and
// reports it rather than its own write error (a broken pipe says only that
// the server stopped reading, the verdict says why).

// maxBulk bounds what a server accepts (the story sends a few MB).
const maxBulk = 64 << 20

// bulkIdle bounds how long a bulk exchange may make no progress, on
// either side (a connection that stalls that long fails). It bounds
// progress, not the whole exchange: a few megabytes through an emulated
// VM on a loaded machine took over a minute while moving all along.
const bulkIdle = 60 * time.Second

// progressConn renews its deadline before every read and write: a
// connection that keeps moving is never cut, one that stalls for idle
// fails. One goroutine uses it at a time.
type progressConn struct {
	net.Conn
	idle time.Duration
}

func (c *progressConn) Read(b []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (c *progressConn) Write(b []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(b)
}

// verdictWait bounds how long a client whose sending failed waits for the
// server's verdict (already sent, or never coming).
const verdictWait = 5 * time.Second

// parseBulk reads a bulk request line: "bulk <size> <seed>", size in
// 1..maxBulk.
func parseBulk(line string) (size int, seed uint64, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "bulk" {
		return 0, 0, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 1 || n > maxBulk {
		return 0, 0, false
	}
	sd, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return n, sd, true
}

// bulkStream is the pseudo-random byte stream of a seed.
func bulkStream(seed uint64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(key)
}

// copyStream writes size bytes of the stream of seed to w.
func copyStream(w io.Writer, seed uint64, size int) error {
	_, err := io.CopyN(w, bulkStream(seed), int64(size))
	return err
}

// checkStream reads size bytes from r and compares them with the stream
// of seed. It returns the offset of the first wrong byte (-1 when every
// byte is right), having read all size bytes all the same, or (no wrong
// byte before it) the read error that stopped it short.
func checkStream(r io.Reader, seed uint64, size int) (int, error) {
	want := bulkStream(seed)
	got, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	bad := -1
	for off := 0; off < size; {
		n := min(len(got), size-off)
		if _, err := io.ReadFull(r, got[:n]); err != nil {
			if bad >= 0 {
				return bad, nil
			}
			return -1, fmt.Errorf("after %d of %d bytes: %w", off, size, err)
		}
		if bad < 0 {
			want.Read(exp[:n])
			if !bytes.Equal(got[:n], exp[:n]) {
				for i := range n {
					if got[i] != exp[i] {
						bad = off + i
						break
					}
				}
			}
		}
		off += n
	}
	return bad, nil
}

// serveBulk answers a bulk request whose line r (reading c) has read, and
// returns what the server's log records of it. c is a *progressConn (or
// has a deadline of its own).
func serveBulk(c net.Conn, r *bufio.Reader, name string, size int, seed uint64) string {
	bad, err := checkStream(r, seed, size)
	var verdict string
	switch {
	case err != nil:
		verdict = fmt.Sprintf("bulk %d bytes: %v", size, err)
		fmt.Fprintf(c, "%s got %s\n", name, verdict)
		return verdict
	case bad >= 0:
		// The whole request is read: the client has sent it and stops
		// at this verdict, with nothing to send back.
		verdict = fmt.Sprintf("bulk %d bytes CORRUPT from byte %d", size, bad)
		fmt.Fprintf(c, "%s got %s\n", name, verdict)
		return verdict
	default:
		verdict = fmt.Sprintf("bulk %d bytes intact", size)
	}
	w := bufio.NewWriterSize(c, 64<<10)
	fmt.Fprintf(w, "%s got %s\n", name, verdict)
	if err := copyStream(w, seed+1, size); err != nil {
		return verdict + fmt.Sprintf("; sending back: %v", err)
	}
	if err := w.Flush(); err != nil {
		return verdict + fmt.Sprintf("; sending back: %v", err)
	}
	return verdict
}

// bulk is one bulk exchange with the server at dst: it prints the server's
// verdict and its own on the bytes that came back, and fails when either
// found a byte missing or wrong.
func bulk(dst string, size int, seed uint64, timeout time.Duration, out io.Writer) error {
	start := time.Now()
	c, err := net.DialTimeout("tcp4", dst, timeout)
	if err != nil {
		return fmt.Errorf("bulk %s: %w", dst, err)
	}
	defer c.Close()
	pc := &progressConn{Conn: c, idle: max(timeout, bulkIdle)}
	w := bufio.NewWriterSize(pc, 64<<10)
	fmt.Fprintf(w, "bulk %d %d\n", size, seed)
	// The server reads while this side writes, and writes only after
	// reading everything: no deadlock on full windows.
	err = copyStream(w, seed, size)
	if err == nil {
		err = w.Flush()
	}
	r := bufio.NewReaderSize(pc, 64<<10)
	if err != nil {
		// The server answered before taking everything and closed: its
		// verdict, sent before it closed, says why.
		pc.idle = verdictWait
		if line, _ := r.ReadString('\n'); strings.HasSuffix(line, "\n") {
			line = strings.TrimSpace(line)
			fmt.Fprintln(out, line)
			return fmt.Errorf("bulk %s: the server says: %s (sending stopped: %v)", dst, line, err)
		}
		return fmt.Errorf("bulk %s: sending (no verdict from the server): %w", dst, err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("bulk %s: no verdict: %w", dst, err)
	}
	line = strings.TrimSpace(line)
	if !strings.HasSuffix(line, fmt.Sprintf("bulk %d bytes intact", size)) {
		fmt.Fprintln(out, line)
		return fmt.Errorf("bulk %s: the server says: %s", dst, line)
	}
	bad, err := checkStream(r, seed+1, size)
	switch {
	case err != nil:
		fmt.Fprintln(out, line)
		return fmt.Errorf("bulk %s: the answer: %w", dst, err)
	case bad >= 0:
		fmt.Fprintln(out, line)
		return fmt.Errorf("bulk %s: the answer is CORRUPT from byte %d", dst, bad)
	}
	d := time.Since(start)
	fmt.Fprintf(out, "%s; %d bytes back intact (%.1f MB both ways in %s, from %s)\n", line, size, float64(2*size)/1e6, d.Round(time.Millisecond), c.LocalAddr())
	return nil
}
