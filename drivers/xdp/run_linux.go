//go:build linux

package xdp

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/nicpath/nicpath/hal"
)

// Verdict is what the datapath did with a frame in Run.
type Verdict uint8

const (
	VerdictAborted Verdict = iota // the program gave up (a bug or a map missing)
	VerdictOutput                 // sent out of RunResult.Port
	VerdictDrop                   // dropped, counted under RunResult.Reason
	VerdictToHost                 // handed to the host with RunResult.Reason
)

func (v Verdict) String() string {
	switch v {
	case VerdictOutput:
		return "output"
	case VerdictDrop:
		return "drop"
	case VerdictToHost:
		return "to_host"
	}
	return "aborted"
}

// RunResult is the outcome of Run.
type RunResult struct {
	Verdict Verdict
	Port    hal.PortID // the output port
	Reason  hal.Reason // why it was dropped or handed to the host
	Rule    hal.RuleID // the rule that decided; 0 on a miss or a parse failure
	Frame   []byte     // the frame as the program left it
}

// Run passes frame through the datapath as if it arrived on port, with
// BPF_PROG_TEST_RUN: the same program and maps as the attached instances,
// built with verdict tracing on. Counters and the exception path see the
// frame as they would see a received one; an output frame is not sent.
func (n *NIC) Run(id hal.PortID, frame []byte) (RunResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.closedErr(); err != nil {
		return RunResult{}, err
	}
	p, ok := n.ports[id]
	if !ok {
		return RunResult{}, fmt.Errorf("xdp: run on port %d: %w", id, hal.ErrNotFound)
	}
	if p.tracer == nil {
		prog, err := n.loadInstance(id, true)
		if err != nil {
			return RunResult{}, err
		}
		p.tracer = prog
	}
	tr := n.maps["trace"]
	if err := tr.Update(uint32(0), bpfTrace{}, ebpf.UpdateAny); err != nil {
		return RunResult{}, &hal.OpError{Driver: DriverName, Op: "run", Err: err}
	}
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	if _, err := p.tracer.Run(opts); err != nil {
		return RunResult{}, &hal.OpError{Driver: DriverName, Op: "run", Err: err}
	}
	var t bpfTrace
	if err := tr.Lookup(uint32(0), &t); err != nil {
		return RunResult{}, &hal.OpError{Driver: DriverName, Op: "run", Err: err}
	}
	return RunResult{Verdict: Verdict(t.Verdict), Port: hal.PortID(t.Port), Reason: hal.Reason(t.Reason),
		Rule: hal.RuleID(t.Rule), Frame: opts.DataOut}, nil
}
