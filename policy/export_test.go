package policy

// For the tests of package policy_test.
var (
	CheckStream   = checkStream
	CPUTime       = cpuTime
	BenchMappings = benchMappings
)

// HugeInUse is the bytes of CA→PA tables in huge-page mappings
// (hugemem.go), which the memory benchmarks count with the heap.
func HugeInUse() uint64 { return uint64(hugeInUse.Load()) }
