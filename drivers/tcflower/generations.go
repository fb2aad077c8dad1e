package tcflower

import (
	"context"
	"sort"

	"github.com/nicpath/nicpath/hal"
)

// Scopes and generations: each scope has a dispatch chain that jumps to
// its active generation's chain.

func (n *NIC) findScope(s hal.Scope) (int, *scopeState) {
	i := sort.Search(len(n.scopes), func(i int) bool { return n.scopes[i].scope >= s })
	if i < len(n.scopes) && n.scopes[i].scope == s {
		return i, n.scopes[i]
	}
	return i, nil
}

func (n *NIC) allocChain() uint32 {
	c := n.nextChain
	n.nextChain++
	return c
}

// ensureScope returns the scope's state, building its chains and linking
// it into the path of every packet first if it is new. The new scope's
// chains are complete before anything jumps to them.
func (n *NIC) ensureScope(s hal.Scope) (*scopeState, error) {
	i, st := n.findScope(s)
	if st != nil {
		return st, nil
	}
	if len(n.scopes) >= maxScopes {
		return nil, unsupported("scope", "the NIC holds %d scopes (tc allows 16 chain jumps per packet); scope %d would be one more", maxScopes, s)
	}
	st = &scopeState{scope: s, dispatch: n.allocChain(), gens: map[hal.Generation]uint32{}}
	c := n.allocChain()
	if tail := n.tailTo(i); tail != 0 {
		if err := n.setJump(c, prioTail, tail); err != nil {
			return nil, opError("scope", 0, err)
		}
	}
	st.gens[0] = c
	if err := n.setJump(st.dispatch, prioDispatch, c); err != nil {
		return nil, opError("scope", 0, err)
	}
	// Link it in: the previous scope's tails, or chain 0.
	if i == 0 {
		if err := n.setJump(0, prioHead, st.dispatch); err != nil {
			return nil, opError("scope", 0, err)
		}
		n.headTarget = st.dispatch
	} else {
		for _, gc := range n.scopes[i-1].gens {
			if err := n.setJump(gc, prioTail, st.dispatch); err != nil {
				return nil, opError("scope", 0, err)
			}
		}
	}
	n.scopes = append(n.scopes, nil)
	copy(n.scopes[i+1:], n.scopes[i:])
	n.scopes[i] = st
	return st, nil
}

// ensureGen returns the chain of (scope, gen), creating it with its tail.
func (n *NIC) ensureGen(st *scopeState, g hal.Generation) (uint32, error) {
	if c, ok := st.gens[g]; ok {
		return c, nil
	}
	c := n.allocChain()
	i, _ := n.findScope(st.scope)
	if tail := n.tailTo(i + 1); tail != 0 {
		if err := n.setJump(c, prioTail, tail); err != nil {
			return 0, opError("generation", 0, err)
		}
	}
	st.gens[g] = c
	return c, nil
}

// Activate makes gen the live generation of scope with one filter replace:
// the scope's dispatch filter now jumps to gen's chain.
func (n *NIC) Activate(ctx context.Context, scope hal.Scope, gen hal.Generation) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return hal.ErrClosed
	}
	st, err := n.ensureScope(scope)
	if err != nil {
		return err
	}
	c, err := n.ensureGen(st, gen)
	if err != nil {
		return err
	}
	if err := n.setJump(st.dispatch, prioDispatch, c); err != nil {
		return opError("activate", 0, err)
	}
	st.active = gen
	return nil
}

// ActiveGeneration returns the live generation of scope (0 for a scope the
// NIC has not seen).
func (n *NIC) ActiveGeneration(scope hal.Scope) (hal.Generation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return 0, hal.ErrClosed
	}
	if _, st := n.findScope(scope); st != nil {
		return st.active, nil
	}
	return 0, nil
}
