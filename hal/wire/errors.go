package wire

import (
	"errors"
	"strconv"

	"github.com/nicpath/nicpath/hal"
)

// Sentinels that a *ParseError matches with errors.Is, for callers that
// branch on the kind of failure rather than on the hal.Reason.
var (
	// ErrTruncated: the frame ends before a header or a length field says it should.
	ErrTruncated = errors.New("truncated")
	// ErrMalformed: headers are inconsistent (bad checksum, bad length, bad
	// version, …). Truncated frames are malformed too.
	ErrMalformed = errors.New("malformed")
	// ErrUnsupported: a header this package recognises but does not key on
	// (more VLAN tags than MaxVLANs, a Geneve critical option, an IPv6
	// jumbogram, …).
	ErrUnsupported = errors.New("unsupported")
	// ErrFragment: a non-first IP fragment; it has no transport header.
	ErrFragment = errors.New("non-first fragment")
)

// Errors of Push, Decap and the rewrites. They are package variables so that
// the data path never allocates, even when it fails.
var (
	// ErrNoHeadroom: the buffer has too few bytes in front of the frame for
	// the headers to be written.
	ErrNoHeadroom = errors.New("wire: not enough headroom in front of the frame")
	// ErrTooBig: the result would exceed what a length field can express.
	ErrTooBig = errors.New("wire: frame too large for the outer length fields")
	// ErrBounds: start/end do not describe a frame inside the buffer.
	ErrBounds = errors.New("wire: frame bounds outside the buffer")
	// ErrNotTunnelled: Decap on a frame that was not parsed as encapsulated.
	ErrNotTunnelled = errors.New("wire: frame is not encapsulated")
	// ErrNoHeader: a rewrite needs a header the frame does not have (an IP
	// rewrite on ARP, a port rewrite on ICMP or on a non-first fragment).
	ErrNoHeader = errors.New("wire: frame lacks the header to rewrite")
	// ErrFamily: an address rewrite with an address of the other family.
	ErrFamily = errors.New("wire: address family differs from the packet's")
	// ErrNoVLAN: PopVLAN on an untagged frame.
	ErrNoVLAN = errors.New("wire: frame has no VLAN tag")
)

// Layer names the header a ParseError is about.
type Layer uint8

// Layers, in the order they appear on the wire.
const (
	LayerEthernet Layer = iota + 1
	LayerVLAN
	LayerIPv4
	LayerIPv6
	LayerIPv6Ext
	LayerTCP
	LayerUDP
	LayerICMP
	LayerSCTP
	LayerVXLAN
	LayerGeneve
	LayerGRE
)

var layerNames = [...]string{"", "ethernet", "vlan", "ipv4", "ipv6", "ipv6-ext", "tcp", "udp", "icmp",
	"sctp", "vxlan", "geneve", "gre"}

func (l Layer) String() string {
	if int(l) < len(layerNames) && l != 0 {
		return layerNames[l]
	}
	return "layer(" + strconv.Itoa(int(l)) + ")"
}

// ParseError says why Parse refused a frame. Reason is what a NIC reports on
// the exception path: hal.ReasonMalformed for truncated or inconsistent
// headers, hal.ReasonUnsupported for headers it recognises but does not key
// on, hal.ReasonFragment for a non-first IP fragment (whose key is still
// filled up to L3).
//
// Parse returns a pointer into the Layout it was given, so that even a
// failing parse allocates nothing: the error is valid until that Layout is
// parsed into again. Copy the struct (e := *pe) to keep it longer.
type ParseError struct {
	Reason    hal.Reason
	Layer     Layer
	Inner     bool // in the encapsulated (inner) frame
	Truncated bool // the frame ended early
	Offset    int  // byte offset in the frame of the offending header
	Msg       string
}

func (e *ParseError) Error() string {
	s := "wire: " + e.Reason.String() + ": "
	if e.Inner {
		s += "inner "
	}
	return s + e.Layer.String() + " at offset " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// Is matches ErrTruncated, ErrMalformed, ErrUnsupported and ErrFragment.
func (e *ParseError) Is(target error) bool {
	switch target {
	case ErrTruncated:
		return e.Truncated
	case ErrMalformed:
		return e.Reason == hal.ReasonMalformed
	case ErrUnsupported:
		return e.Reason == hal.ReasonUnsupported
	case ErrFragment:
		return e.Reason == hal.ReasonFragment
	}
	return false
}

// ReasonOf returns the hal.Reason of a *ParseError, ReasonNone for nil and
// ReasonMalformed for any other error.
func ReasonOf(err error) hal.Reason {
	if err == nil {
		return hal.ReasonNone
	}
	// Parse returns a *ParseError itself; the direct assertion keeps the
	// data path free of errors.As, which allocates its target.
	if pe, ok := err.(*ParseError); ok {
		return pe.Reason
	}
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return hal.ReasonMalformed
}
