package policy

import (
	"sync/atomic"

	"github.com/nicpath/nicpath/internal/hugemem"
)

// Huge pages for the CA→PA table (internal/hugemem). At a million mappings
// the table is some 48 MB that every first packet reads at a random slot:
// with 4 KiB pages that read is a TLB miss as well as a cache miss. A table
// that large is therefore taken from a huge-page mapping; mapEntry holds no
// Go pointers. The mapping's owner sits beside the entries
// (mappingTable.mem): the entries are only reached through the table, so
// nothing reads them after it is gone.

// hugeInUse is the bytes mapped for CA→PA tables in the process, which the
// memory benchmarks add to the heap's figure.
var hugeInUse atomic.Int64

// makeEntries returns a zeroed array of n entries, from huge-page memory
// when it is large (mem is then its owner, to keep beside it).
func makeEntries(n int) (e []mapEntry, mem *hugemem.Mem) {
	return hugemem.Slice[mapEntry](n, &hugeInUse)
}
