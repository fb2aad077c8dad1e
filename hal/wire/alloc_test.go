package wire

import (
	"testing"

	"github.com/nicpath/nicpath/hal"
)

// The data path must not allocate: not to parse (including failing), not to
// encapsulate, not to rewrite.

func TestParseDoesNotAllocate(t *testing.T) {
	for _, c := range parseCases() {
		var k hal.FlowKey
		var l Layout
		if a := testing.AllocsPerRun(200, func() { _ = Parse(c.frame, 1, &k, &l) }); a != 0 {
			t.Errorf("Parse %s: %v allocations", c.name, a)
		}
	}
	// Failing parses, truncated ones included, do not allocate either.
	f := udp4Frame64()
	var k hal.FlowKey
	var l Layout
	if a := testing.AllocsPerRun(200, func() {
		for n := 0; n < len(f); n += 7 {
			_ = Parse(f[:n], 1, &k, &l)
		}
	}); a != 0 {
		t.Errorf("truncated Parse: %v allocations", a)
	}
}

func TestPushDoesNotAllocate(t *testing.T) {
	f := udp4Frame64()
	for _, e := range encaps() {
		tpl, err := NewEncapTemplate(&e.e)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, MaxEncapHeadroom+len(f))
		copy(buf[MaxEncapHeadroom:], f)
		if a := testing.AllocsPerRun(200, func() {
			if _, err := tpl.Push(buf, MaxEncapHeadroom, len(buf), 7); err != nil {
				t.Fatal(err)
			}
			_, _ = tpl.Push(buf, 1, len(buf), 7) // the error path too
		}); a != 0 {
			t.Errorf("Push %s: %v allocations", e.name, a)
		}
	}
}

func TestRewritesDoNotAllocate(t *testing.T) {
	for _, spec := range []FrameSpec{udp4Spec(), tcp6Spec()} {
		f := Build(spec)
		buf := make([]byte, 8+len(f))
		copy(buf[8:], f)
		frame := buf[8:]
		var k hal.FlowKey
		var l Layout
		if err := Parse(frame, 1, &k, &l); err != nil {
			t.Fatal(err)
		}
		a4 := caB4.As16()
		a4[10], a4[11] = 0xff, 0xff
		addr := a4
		if spec.Src.Is6() {
			addr = caB6.As16()
		}
		if a := testing.AllocsPerRun(200, func() {
			SetEthSrc(frame, &l, macC)
			SetEthDst(frame, &l, macD)
			_ = SetIPSrc(frame, &l, addr)
			_ = SetIPDst(frame, &l, addr)
			_ = SetIPDst(frame, &l, [16]byte{}) // an error
			_ = SetL4Src(frame, &l, 1)
			_ = SetL4Dst(frame, &l, 2)
			_, _ = DecTTL(frame, &l)
			s, _ := PushVLAN(buf, 8, len(buf), 5)
			_, _ = PopVLAN(buf, s, len(buf))
			_, _ = Decap(frame, &l)
			_ = FlowHash(&k)
		}); a != 0 {
			t.Errorf("rewrites on %v: %v allocations", spec.Src, a)
		}
	}
}
