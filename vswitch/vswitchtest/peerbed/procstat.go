package peerbed

import (
	"bytes"
	"errors"
	"strconv"
	"time"
)

// userHZ is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on every
// Linux ABI).
const userHZ = 100

// parseProcCPU reads the CPU time a process used, in user and kernel mode
// (utime + stime, its live and its ended threads together, softirq work
// that ran in its context included), from its /proc/PID/stat: the fields
// after the command name, which is in parentheses and may hold spaces
// and parentheses itself.
func parseProcCPU(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("peerbed: /proc/PID/stat without a command name")
	}
	f := bytes.Fields(data[i+1:])
	// state(3) … utime(14) stime(15): the 12th and 13th after the name.
	if len(f) < 13 {
		return 0, errors.New("peerbed: /proc/PID/stat cut short")
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(string(s), 10, 63)
		if err != nil {
			return 0, errors.New("peerbed: /proc/PID/stat: CPU time " + strconv.Quote(string(s)))
		}
		ticks += v
	}
	if ticks > uint64(1<<62)/uint64(time.Second/userHZ) {
		return 0, errors.New("peerbed: /proc/PID/stat: CPU time out of range")
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// parseMachineBusy reads, from /proc/stat, the time the machine's CPUs
// spent busy since boot, all CPUs together: the "cpu" line's user, nice,
// system, irq, softirq and steal (a hypervisor's other guests had the
// CPU: it was not ours to idle in), not idle and iowait; guest and
// guest_nice are already in user and nice.
func parseMachineBusy(data []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, errors.New("peerbed: /proc/stat without its cpu line")
	}
	var ticks uint64
	// user nice system idle iowait irq softirq steal
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(string(s), 10, 63)
		if err != nil {
			return 0, errors.New("peerbed: /proc/stat: CPU time " + strconv.Quote(string(s)))
		}
		if i == 3 || i == 4 {
			continue
		}
		if ticks += v; ticks > uint64(1<<62)/uint64(time.Second/userHZ) {
			return 0, errors.New("peerbed: /proc/stat: CPU time out of range")
		}
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}
