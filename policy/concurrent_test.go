package policy_test

import (
	"sync"
	"testing"

	"github.com/nicpath/nicpath/policy/policytest"
)

// TestConcurrentBuilds builds states on several goroutines at once, as one
// process following several hosts does; under -race it fails if Build
// shares unsynchronised state between builders.
func TestConcurrentBuilds(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := policytest.Builder(policytest.Config{Seed: uint64(i + 1), Hosts: 3, Tenants: 2, VNETsPerTenant: 2, VMsPerVNET: 40})
			st, err := b.Build()
			if err != nil {
				t.Error(err)
				return
			}
			if st.MappingCount() == 0 {
				t.Error("a generated policy built with no mappings")
			}
		}()
	}
	wg.Wait()
}
