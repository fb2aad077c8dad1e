package conformance

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nicpath/nicpath/hal"
)

// The differential mode sends the same rules and frames to the reference
// NIC and to a target and compares, byte for byte, what leaves each port and
// what reaches the host. Ports are matched by role (where VM traffic enters,
// where it leaves, the uplink, the vport), since two NICs number their ports
// differently.

// role names a port by what the suite uses it for.
type role string

const (
	roleIn  role = "in"  // where VM traffic enters
	roleOut role = "out" // where forwarded traffic leaves
	roleUp  role = "up"  // where tunnelled traffic enters
	roleVP  role = "vp"  // the vport decapsulated traffic goes to
)

// input is one frame sent into a port.
type input struct {
	port  role
	frame []byte
}

// scenario is one differential comparison.
type scenario struct {
	name   string
	rules  func(ports map[role]hal.PortID) []hal.Rule
	inputs []input
}

// observed is what one NIC did with a scenario's inputs.
type observed struct {
	out  map[role][][]byte
	excs []string // reason, in-port role, VNI, rule, frame
}

func diffScenarios() []scenario {
	var out []scenario
	simple := func(name string, in []byte, acts func(p map[role]hal.PortID) []hal.Action, m func(p map[role]hal.PortID) hal.Match) {
		out = append(out, scenario{
			name: name,
			rules: func(p map[role]hal.PortID) []hal.Rule {
				return []hal.Rule{{ID: 1, Priority: 100, Match: m(p), Actions: acts(p)}}
			},
			inputs: []input{{roleIn, in}},
		})
	}
	inPort := func(fam uint16, proto uint8) func(p map[role]hal.PortID) hal.Match {
		return func(p map[role]hal.PortID) hal.Match {
			var m hal.Match
			m.InPort(p[roleIn])
			if fam != 0 {
				m.EthType(fam)
			}
			if proto != 0 {
				m.Proto(proto)
			}
			return m
		}
	}
	for _, k := range allActions {
		for _, rw := range rewrites(k) {
			var fam uint16
			var proto uint8
			if rw.l3 {
				fam = family(rw.spec)
			}
			if rw.l4 {
				proto = rw.spec.Proto
			}
			simple("rewrite-"+k.String()+"-"+rw.name, build(rw.spec), func(p map[role]hal.PortID) []hal.Action {
				return append(append([]hal.Action(nil), rw.actions...), hal.Output(p[roleOut]))
			}, inPort(fam, proto))
		}
	}
	for _, k := range allEncaps {
		for _, v6 := range []bool{false, true} {
			enc := encapFor(k, v6)
			name := "encap-" + k.String() + map[bool]string{false: "-ipv4", true: "-ipv6"}[v6]
			// Several flows, so that the flow entropy (UDP source port,
			// NVGRE FlowID) is compared as well.
			var ins []input
			for i := 0; i < 4; i++ {
				s := udpSpec()
				s.SPort = uint16(40000 + 7*i)
				ins = append(ins, input{roleIn, build(s)})
			}
			out = append(out, scenario{name: name, inputs: ins, rules: func(p map[role]hal.PortID) []hal.Rule {
				var m hal.Match
				m.InPort(p[roleIn])
				return []hal.Rule{{ID: 1, Priority: 100, Match: m, Actions: []hal.Action{hal.EncapWith(enc), hal.Output(p[roleOut])}}}
			}})
		}
		inner := build(udpSpec())
		out = append(out, scenario{name: "decap-" + k.String(),
			inputs: []input{{roleUp, encapsulate(defaultTunnel(k, 100), inner)}, {roleUp, encapsulate(defaultTunnel(k, 200), inner)}},
			rules: func(p map[role]hal.PortID) []hal.Rule {
				var m hal.Match
				m.Tunnel(k, 100)
				return []hal.Rule{{ID: 1, Priority: 100, Match: m, Actions: []hal.Action{hal.Decap(), hal.Output(p[roleVP])}}}
			}})
	}
	out = append(out, scenario{name: "miss", inputs: []input{{roleIn, build(udpSpec())}, {roleIn, build(tcpSpec())}, {roleIn, build(udp6Spec())}},
		rules: func(map[role]hal.PortID) []hal.Rule { return nil }})
	simple("to-host", build(udpSpec()), func(map[role]hal.PortID) []hal.Action { return []hal.Action{hal.ToHost(hal.ReasonAction)} }, inPort(0, 0))
	simple("drop", build(udpSpec()), func(map[role]hal.PortID) []hal.Action { return []hal.Action{hal.Drop(hal.ReasonPolicy)} }, inPort(0, 0))
	ttl1 := udpSpec()
	ttl1.TTL = 1
	simple("ttl-expiry", build(ttl1), func(p map[role]hal.PortID) []hal.Action {
		return []hal.Action{hal.DecTTL(), hal.Output(p[roleOut])}
	}, inPort(hal.EtherTypeIPv4, 0))
	out = append(out, scenario{name: "priority", rules: func(p map[role]hal.PortID) []hal.Rule {
		var wide, narrow hal.Match
		wide.IPDst(hal.MustPrefix("198.18.0.0/16"))
		narrow.IPDst(hal.MustPrefix("198.18.2.0/24"))
		return []hal.Rule{
			{ID: 5, Priority: 100, Match: wide, Actions: []hal.Action{hal.SetEthDst(macX), hal.Output(p[roleOut])}},
			{ID: 9, Priority: 200, Match: narrow, Actions: []hal.Action{hal.SetEthDst(macY), hal.Output(p[roleOut])}},
			{ID: 7, Priority: 200, Match: narrow, Actions: []hal.Action{hal.SetEthDst(macA), hal.Output(p[roleOut])}},
		}
	}, inputs: func() []input {
		s := udpSpec()
		s.IPDst = netip.MustParseAddr("198.18.7.7")
		return []input{{roleIn, build(udpSpec())}, {roleIn, build(s)}}
	}()})
	var bad []input
	for _, f := range malformedFrames() {
		bad = append(bad, input{roleIn, f})
	}
	out = append(out, scenario{name: "malformed", inputs: bad, rules: func(p map[role]hal.PortID) []hal.Rule {
		var m hal.Match
		m.InPort(p[roleIn])
		return []hal.Rule{{ID: 1, Priority: 100, Match: m, Actions: []hal.Action{hal.Output(p[roleOut])}}}
	}})
	frag := build(udpSpec())
	frag[14+6], frag[14+7] = 0, 185
	fixIPv4Checksum(frag[14:])
	out = append(out, scenario{name: "fragment", inputs: []input{{roleIn, frag}}, rules: func(p map[role]hal.PortID) []hal.Rule {
		var m hal.Match
		m.EthType(hal.EtherTypeIPv4).Proto(hal.ProtoUDP).L4Dst(7000)
		return []hal.Rule{{ID: 1, Priority: 100, Match: m, Actions: []hal.Action{hal.Output(p[roleOut])}}}
	}})
	return out
}

// observe runs sc on a fresh NIC of tg. A scenario whose rules need a
// capability tg does not advertise is skipped, naming it: what the NIC
// lacks is the suite's business, not a difference. A rule within what tg
// advertises that its Validate refuses fails the scenario.
func observe(t T, tg, ref *Target, sc scenario) observed {
	e := open(t, tg)
	ports := map[role]hal.PortID{roleIn: e.in.ID, roleOut: e.out.ID, roleUp: e.tunnelPort().ID}
	byID := map[hal.PortID]role{e.in.ID: roleIn, e.out.ID: roleOut}
	if len(e.vports) > 0 {
		ports[roleVP] = e.vports[0].ID
		if _, ok := byID[e.vports[0].ID]; !ok {
			byID[e.vports[0].ID] = roleVP
		}
	}
	if _, ok := byID[ports[roleUp]]; !ok {
		byID[ports[roleUp]] = roleUp
	}
	rules := sc.rules(ports)
	for i := range rules {
		if missing := missingFor(&e.caps, &rules[i]); len(missing) > 0 {
			need(t, missing[0], "%s does not advertise %s, which the scenario's rule %v needs", tg.Name, strings.Join(missing, ", "), &rules[i])
		}
	}
	for i := range rules {
		if err := e.nic.Validate(&rules[i]); err != nil {
			t.Fatalf("%s: Validate refuses %v, which is within the capabilities it advertises: %v", tg.Name, &rules[i], err)
		}
	}
	if len(rules) > 0 {
		e.add(rules...)
	}
	for _, in := range sc.inputs {
		if len(in.frame) < tg.MinFrame || len(in.frame) < ref.MinFrame {
			continue // neither NIC gets what one harness cannot send
		}
		id, ok := ports[in.port]
		if !ok {
			need(t, needVPort, "%s has no port for role %s", tg.Name, in.port)
		}
		e.send(hal.Port{ID: id}, in.frame)
	}
	var ob observed
	ob.out = map[role][][]byte{}
	// Listen on every port and the exception path at once: each listens
	// until it has been quiet for a while.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, r := range byID {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs := e.recv(hal.Port{ID: id}, 1<<20, e.tg.quiet()*2)
			mu.Lock()
			ob.out[r] = fs
			mu.Unlock()
		}()
	}
	var xs []hal.Exception
	if e.caps.ExceptionPath {
		xs = e.exceptions(1<<20, e.tg.quiet()*2)
	}
	wg.Wait()
	if e.caps.ExceptionPath {
		for _, x := range xs {
			ob.excs = append(ob.excs, fmt.Sprintf("reason=%v in=%s vni=%d rule=%d truncated=%v frame=% x",
				x.Reason, byID[x.InPort], x.VNI, x.Rule, x.Truncated, x.Frame()))
		}
	}
	return ob
}

// compare reports every difference between what ref and tg did.
func compare(t T, refName, tgName string, a, b observed) {
	roles := map[role]bool{}
	for r := range a.out {
		roles[r] = true
	}
	for r := range b.out {
		roles[r] = true
	}
	var sorted []string
	for r := range roles {
		sorted = append(sorted, string(r))
	}
	sort.Strings(sorted)
	for _, rs := range sorted {
		r := role(rs)
		fa, fb := a.out[r], b.out[r]
		if len(fa) != len(fb) {
			t.Errorf("port %s: %s emitted %d frames, %s %d", r, refName, len(fa), tgName, len(fb))
			continue
		}
		for i := range fa {
			if !bytes.Equal(fa[i], fb[i]) {
				t.Errorf("port %s frame %d differs:\n%s: % x\n%s: % x", r, i, refName, fa[i], tgName, fb[i])
			}
		}
	}
	if len(a.excs) != len(b.excs) {
		t.Errorf("%s sent %d packets to the host, %s %d:\n%s: %v\n%s: %v", refName, len(a.excs), tgName, len(b.excs), refName, a.excs, tgName, b.excs)
		return
	}
	for i := range a.excs {
		if a.excs[i] != b.excs[i] {
			t.Errorf("exception %d differs:\n%s: %s\n%s: %s", i, refName, a.excs[i], tgName, b.excs[i])
		}
	}
}

// differential runs every scenario as a subcase of t.
func differential(t T, ref, tg *Target) {
	for _, sc := range diffScenarios() {
		t.Run(sc.name, func(t T) {
			a := observe(t, ref, tg, sc)
			b := observe(t, tg, ref, sc)
			compare(t, ref.Name, tg.Name, a, b)
		})
	}
}

// Differential compares target with the reference ref (softnic) on the
// same rules and frames and returns the report: one "diff/<scenario>" case
// per scenario, failed on any difference that target.Documented does not
// list, and on a rule that either NIC's Validate refuses although it is
// within what that NIC advertises; skipped, naming the capability and
// counted in Summary.Skip, when a rule needs one that a NIC does not
// advertise.
func Differential(ctx context.Context, ref, target Target, opts Options) *Report {
	rep := &Report{Target: target.Name, Reference: ref.Name, Mode: ModeDifferential, Started: time.Now().UTC()}
	begin := time.Now()
	defer func() { rep.Seconds = time.Since(begin).Seconds() }()
	rep.Environment = HostEnvironment()
	caps, err := probeCaps(ctx, &target)
	if err == nil {
		_, err = probeCaps(ctx, &ref)
	}
	if err != nil {
		rep.Error = err.Error()
		rep.Cases = append(rep.Cases, CaseResult{Name: "open", Status: StatusFail, Reason: err.Error()})
		rep.summarize()
		progress(opts.Progress, rep.Cases[0])
		return rep
	}
	rep.Capabilities = &caps
	if target.Devices != nil {
		rep.Environment.Devices, rep.Environment.DevicesError = devicesOf(ctx, &target)
	}
	if opts.Run != "" && !strings.HasPrefix(opts.Run, "diff") && !strings.HasPrefix(opts.Run, "^diff") {
		opts.Run = "diff/" + opts.Run // scenarios are subcases of "diff"
	}
	filter, err := opts.filter()
	if err != nil {
		rep.Error = err.Error()
		rep.summarize()
		return rep
	}
	c := caseDef{name: "diff", run: func(t T, tg *Target) { differential(t, &ref, tg) }}
	rec := runCase(ctx, &target, c, &opts)
	rep.Cases = append(rep.Cases, flatten(&target, rec, nil)...)
	dc := documentedCase(&target, rep.Cases, map[string]bool{"diff": true}, selects(filter))
	rep.Cases = append(rep.Cases, dc...)
	for _, c := range dc {
		progress(opts.Progress, c)
	}
	rep.Documented = append([]Difference(nil), target.Documented...)
	rep.Matrix = matrix(&caps, rep.Cases)
	rep.summarize()
	return rep
}

// RunDifferential is Differential for go test: one subtest per scenario,
// and a last one, "documented", that holds target's list (its "diff/"
// entries) to the scenarios, as Run does.
func RunDifferential(t *testing.T, ref, target Target) {
	t.Helper()
	c := caseDef{name: "diff", run: func(t T, tg *Target) { differential(t, &ref, tg) }}
	var results []CaseResult
	ran := map[string]bool{}
	t.Run("diff", func(t *testing.T) {
		ran["diff"] = true
		rec := runCase(t.Context(), &target, c, &Options{})
		results = flatten(&target, rec, nil)
		replay(t, &target, rec)
	})
	checkDocumentedT(t, &target, results, ran, caseNames())
}
