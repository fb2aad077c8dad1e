package wire

import (
	"testing"

	"github.com/nicpath/nicpath/hal"
)

func TestReasonOfAllocatesNothing(t *testing.T) {
	var k hal.FlowKey
	var l Layout
	err := Parse([]byte{1, 2, 3}, 1, &k, &l)
	if err == nil {
		t.Fatal("a 3-byte frame parsed")
	}
	if n := testing.AllocsPerRun(100, func() {
		if ReasonOf(err) != hal.ReasonMalformed {
			t.Fatal("a truncated frame is not malformed")
		}
	}); n != 0 {
		t.Fatalf("ReasonOf allocated %v times", n)
	}
}
