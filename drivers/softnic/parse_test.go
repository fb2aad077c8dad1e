package softnic

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/hal/wire"
)

// checkParseFast fails t unless parseFast either declines frame or gives
// exactly the words that wire.Parse (and loadWords) give, and fastLayout,
// for a frame parseFast took, the layout wire.Parse gives. It reports
// whether parseFast took the frame.
func checkParseFast(t testing.TB, frame []byte, in hal.PortID) bool {
	t.Helper()
	var w words
	var l wire.Layout
	// Whatever parseFast and fastLayout leave must not depend on what was
	// there before.
	for i := range w {
		w[i] = 0xdeadbeefdeadbeef
	}
	l = wire.Layout{L2: 7, L3: 7, L4: 7, Payload: 7, End: 7, VLANs: 7, IPHdrLen: 7, EthType: 7, Proto: 7, Flags: 0x7f,
		OuterL3: 7, OuterL4: 7, Tunnel: 7, OuterVLANs: 7, OuterEthType: 7, OuterFlags: 7}
	if !parseFast(frame, in, &w) {
		return false
	}
	fastLayout(frame, &l)
	var k hal.FlowKey
	var want wire.Layout
	if err := wire.Parse(frame, in, &k, &want); err != nil {
		t.Fatalf("parseFast took a frame wire.Parse refuses (%v):\n% x", err, frame)
	}
	var ww words
	loadWords(&k, &ww)
	if w != ww {
		t.Fatalf("parseFast's words differ from wire.Parse's key %v:\n got %#x\nwant %#x\nframe % x", k, w, ww, frame)
	}
	if l != want {
		t.Fatalf("fastLayout's layout differs from wire.Parse's:\n got %+v\nwant %+v\nframe % x", l, want, frame)
	}
	if got, want := flowHash(&w), wire.FlowHash(&k); got != want {
		t.Fatalf("flow hash %#x, wire.FlowHash %#x", got, want)
	}
	return true
}

// fuzzCorpus returns the []byte values of every seed in the fuzz corpora
// of this package and of hal/wire.
func fuzzCorpus(t *testing.T) [][]byte {
	var out [][]byte
	for _, dir := range []string{"testdata/fuzz", "../../hal/wire/testdata/fuzz"} {
		files, err := filepath.Glob(filepath.Join(dir, "*", "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "[]byte("); ok {
					s, err := strconv.Unquote(strings.TrimSuffix(v, ")"))
					if err != nil {
						t.Fatalf("%s: %v", f, err)
					}
					out = append(out, []byte(s))
				}
			}
		}
	}
	if len(out) < 100 {
		t.Fatalf("only %d corpus entries found", len(out))
	}
	return out
}

// TestParseFast holds parseFast to wire.Parse on the fuzz corpora, on
// frames of every shape it takes, and on those frames damaged byte by byte
// and cut short.
func TestParseFast(t *testing.T) {
	taken := 0
	for _, f := range fuzzCorpus(t) {
		if checkParseFast(t, f, 3) {
			taken++
		}
	}
	t.Logf("corpus: parseFast took %d frames", taken)

	rng := rand.New(rand.NewPCG(5, 6))
	addr4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	ports := []uint16{0, 1, 53, 80, hal.PortVXLAN, hal.PortGeneve, 4790, 65535}
	taken = 0
	for n := 0; n < 20000; n++ {
		spec := wire.FrameSpec{SrcMAC: hal.MAC{2, byte(n), 3, 4, 5, byte(n >> 8)}, DstMAC: hal.MAC{0xff, 1, 2, 3, byte(n), 6},
			Src: addr4(), Dst: addr4(), TTL: uint8(rng.Uint32()), TOS: uint8(rng.Uint32()),
			SrcPort: uint16(rng.Uint32()), DstPort: ports[rng.IntN(len(ports))], Payload: make([]byte, rng.IntN(40))}
		if n%3 == 0 {
			spec.DstPort = uint16(rng.Uint32())
		}
		switch rng.IntN(8) {
		case 0:
			spec.Proto = hal.ProtoICMP
		case 1, 2, 3:
			spec.Proto = hal.ProtoTCP
		default:
			spec.Proto = hal.ProtoUDP
		}
		switch rng.IntN(6) {
		case 0:
			spec.VLAN = uint16(rng.IntN(4096))
		case 1:
			spec.VLAN = hal.VLANPresent
		case 2:
			spec.VLAN, spec.OuterVLAN = 5, 9
		}
		if rng.IntN(10) == 0 {
			spec.IPOptions = []byte{1, 1, 1, 1}
		}
		if rng.IntN(10) == 0 {
			spec.MoreFragments = true
		}
		frame := wire.Build(spec)
		if rng.IntN(4) == 0 {
			frame = append(frame, make([]byte, rng.IntN(30))...) // Ethernet padding
		}
		in := hal.PortID(rng.Uint32())
		if checkParseFast(t, frame, in) {
			taken++
		}
		// Damaged: one byte of the headers changed, or the frame cut.
		bad := append([]byte(nil), frame...)
		bad[rng.IntN(min(len(bad), 70))] ^= byte(1 << rng.IntN(8))
		checkParseFast(t, bad, in)
		checkParseFast(t, frame[:rng.IntN(len(frame)+1)], in)
	}
	if taken < 5000 {
		t.Fatalf("parseFast took only %d of the well-formed frames", taken)
	}
}

// TestFlowHashWords holds flowHash, computed from a key's words, to
// wire.FlowHash of the key, for any key.
func TestFlowHashWords(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	types := []uint16{hal.EtherTypeIPv4, hal.EtherTypeIPv6, hal.EtherTypeARP, hal.EtherTypeVLAN, 0, 0xffff}
	for n := 0; n < 100000; n++ {
		var k hal.FlowKey
		fill(k.TunSrc[:])
		fill(k.TunDst[:])
		fill(k.IPSrc[:])
		fill(k.IPDst[:])
		fill(k.EthSrc[:])
		fill(k.EthDst[:])
		k.InPort, k.VNI = hal.PortID(rng.Uint32()), rng.Uint32()
		k.EthType = types[rng.IntN(len(types))]
		if n%7 == 0 {
			k.EthType = uint16(rng.Uint32())
		}
		k.VLAN, k.L4Src, k.L4Dst = uint16(rng.Uint32()), uint16(rng.Uint32()), uint16(rng.Uint32())
		k.Proto, k.TunKind = uint8(rng.Uint32()), hal.EncapKind(rng.Uint32())
		var w words
		loadWords(&k, &w)
		if got, want := flowHash(&w), wire.FlowHash(&k); got != want {
			t.Fatalf("%v: flowHash %#x, wire.FlowHash %#x", k, got, want)
		}
	}
}
