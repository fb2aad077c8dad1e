// Package importcheck holds nicpath's import rules and checks a module's
// import graph against them. Its test runs the check on this module (go
// list), so that a change that breaks a rule fails go test:
//
//   - hal imports nothing of nicpath's; hal/wire imports only hal;
//   - drivers depend on no vswitch, policy, store or examples package;
//   - policy never depends on vswitch;
//   - conformance depends only on hal and hal/wire; drivers come in only
//     through its targets (conformance/internal/targets,
//     conformance/internal/devices) and its command (conformance/cmd);
//   - examples import only public packages: an examples package importing
//     internal/... must be listed in ExamplesInternal, which names today's
//     exceptions exactly, so that the list only shrinks;
//   - internal/ holds low-level helpers: it imports no driver and no
//     vswitch package, save the pairs InternalExceptions lists (the same
//     way: exactly today's, a list that only shrinks);
//   - control imports nothing of nicpath's (a control client carries none
//     of the agent's dependencies); hal/haltest and agent/driver import
//     only hal (drivers and their tests may use them);
//   - hal/learn (the drivers' shared address learning) imports only hal.
//
// Rules read the packages' non-test imports: tests may reach further (a
// driver's test runs the conformance suite).
package importcheck

import (
	"fmt"
	"slices"
	"strings"
)

// Package is one package of the module: its path relative to the module
// (hal, drivers/xdp, …), the module packages it imports directly, and those
// it depends on directly or not.
type Package struct {
	Path    string
	Imports []string
	Deps    []string
}

// Rule forbids the packages it applies to some dependencies.
type Rule struct {
	Name string
	// Applies selects the packages the rule is about.
	Applies func(pkg string) bool
	// Forbids says whether pkg may not depend on dep.
	Forbids func(pkg, dep string) bool
	// Direct limits the rule to direct imports; otherwise every
	// dependency, direct or not, counts.
	Direct bool
}

// Pair is a package and one of its imports.
type Pair struct{ From, To string }

func (p Pair) String() string { return p.From + " -> " + p.To }

// under reports whether pkg is root or below it.
func under(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }

func underAny(pkg string, roots ...string) bool {
	for _, r := range roots {
		if under(pkg, r) {
			return true
		}
	}
	return false
}

// ExamplesInternal lists, by package pair, the examples packages that
// import an internal package today because nothing public does the job
// yet. The check fails on an import outside the list and on a pair the
// code no longer has: remove it then.
var ExamplesInternal = []Pair{
	{"examples/demo", "internal/afpacket"}, // the frames a namespaced VM sends, TSO super-frames counted
	{"examples/demo", "internal/nsexec"},   // the packet socket opened in the VM's namespace
}

// InternalExceptions lists, by package pair, the internal packages that
// import a driver or the vswitch today. The check fails on such an import
// outside the list and on a pair the code no longer has: remove it then.
var InternalExceptions = []Pair{}

// Rules are nicpath's import rules, with the exceptions given for examples
// (importing internal/) and for internal/ (importing drivers and vswitch).
func Rules(examplesInternal, internalExceptions []Pair) []Rule {
	allowed := map[Pair]bool{}
	for _, p := range examplesInternal {
		allowed[p] = true
	}
	allowedInternal := map[Pair]bool{}
	for _, p := range internalExceptions {
		allowedInternal[p] = true
	}
	conformanceDrivers := func(pkg string) bool {
		return underAny(pkg, "conformance/internal/targets", "conformance/internal/devices", "conformance/cmd")
	}
	return []Rule{
		{
			Name:    "hal imports nothing of nicpath's",
			Applies: func(pkg string) bool { return pkg == "hal" },
			Forbids: func(_, dep string) bool { return true },
		},
		{
			Name:    "hal/wire imports only hal",
			Applies: func(pkg string) bool { return pkg == "hal/wire" },
			Forbids: func(_, dep string) bool { return dep != "hal" },
		},
		{
			Name:    "drivers depend on no vswitch, policy, store or examples",
			Applies: func(pkg string) bool { return under(pkg, "drivers") },
			Forbids: func(_, dep string) bool { return underAny(dep, "vswitch", "policy", "store", "examples") },
		},
		{
			Name:    "policy never depends on vswitch",
			Applies: func(pkg string) bool { return under(pkg, "policy") },
			Forbids: func(_, dep string) bool { return under(dep, "vswitch") },
		},
		{
			Name:    "conformance depends only on hal and hal/wire",
			Applies: func(pkg string) bool { return pkg == "conformance" },
			Forbids: func(_, dep string) bool { return dep != "hal" && dep != "hal/wire" },
		},
		{
			Name: "conformance reaches drivers only through its targets and its command",
			Applies: func(pkg string) bool {
				return under(pkg, "conformance") && !conformanceDrivers(pkg)
			},
			Forbids: func(_, dep string) bool { return under(dep, "drivers") },
		},
		{
			Name:    "examples import only public packages (internal only as listed in ExamplesInternal)",
			Applies: func(pkg string) bool { return under(pkg, "examples") },
			Forbids: func(pkg, dep string) bool {
				return strings.Contains("/"+dep+"/", "/internal/") && !allowed[Pair{pkg, dep}]
			},
			Direct: true,
		},
		{
			Name:    "internal/ imports no driver and no vswitch (only as listed in InternalExceptions)",
			Applies: func(pkg string) bool { return under(pkg, "internal") },
			Forbids: func(pkg, dep string) bool {
				return underAny(dep, "drivers", "vswitch") && !allowedInternal[Pair{pkg, dep}]
			},
			Direct: true,
		},
		{
			Name:    "control imports nothing of nicpath's",
			Applies: func(pkg string) bool { return pkg == "control" },
			Forbids: func(_, dep string) bool { return true },
		},
		{
			Name:    "hal/haltest and agent/driver import only hal",
			Applies: func(pkg string) bool { return pkg == "hal/haltest" || pkg == "agent/driver" },
			Forbids: func(_, dep string) bool { return dep != "hal" },
		},
		{
			Name:    "hal/learn imports only hal",
			Applies: func(pkg string) bool { return pkg == "hal/learn" },
			Forbids: func(_, dep string) bool { return dep != "hal" },
		},
	}
}

// Check returns every broken rule, one line each, and the pairs of
// exceptions that no package imports any more.
func Check(pkgs []Package, rules []Rule, exceptions []Pair) (broken []string, stale []Pair) {
	imported := map[Pair]bool{}
	for _, p := range pkgs {
		for _, d := range p.Imports {
			imported[Pair{p.Path, d}] = true
		}
		for _, r := range rules {
			if !r.Applies(p.Path) {
				continue
			}
			deps := p.Deps
			if r.Direct {
				deps = p.Imports
			}
			for _, d := range deps {
				if r.Forbids(p.Path, d) {
					broken = append(broken, fmt.Sprintf("%s: %s depends on %s", r.Name, p.Path, d))
				}
			}
		}
	}
	for _, e := range exceptions {
		if !imported[e] {
			stale = append(stale, e)
		}
	}
	slices.Sort(broken)
	return broken, stale
}
