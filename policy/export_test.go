package policy

// For the tests of package policy_test.
var (
	CheckStream   = checkStream
	CPUTime       = cpuTime
	BenchMappings = benchMappings
)
