// Package vmtest runs a Go test binary inside a throw-away Linux virtual
// machine: the third test tier, for kernel features the build machine's own
// kernel lacks (cls_flower, act_tunnel_key, act_pedit, act_gact, Geneve).
//
// [Run] boots Debian's kernel (the linux-image-amd64 package, found under
// /boot and /lib/modules) with qemu-system-x86_64 in TCG mode and an
// initramfs that it writes itself: busybox (busybox-static), the kernel
// modules asked for with their dependencies (from the kernel's modules.dep,
// decompressed on the host), any host executables asked for with their
// shared libraries (iproute2's ip and tc), any other files asked for (static
// binaries the test runs, at paths of their own), and the test binary. The init
// script loads the modules, runs the test binary with the given arguments
// and the environment variable NICPATH_IN_VM=1, prints an end marker with the
// exit code and powers the machine off. Run streams the serial console and
// returns the exit code and the output.
//
// Contracts:
//   - The VM has no network device toward the outside (-nic none); whatever
//     the test does to networking stays inside the VM.
//   - A run is bounded by Config.Timeout; qemu is killed when it expires or
//     when ctx is done, and the error says so.
//   - qemu dies with the process that started it (a parent-death signal):
//     a test binary killed by its -timeout, by a signal or by go test
//     leaves no VM running.
//   - Every Run boots a VM of its own: `go test -count=N` of a package
//     whose TestVM boots one boots N, each a fresh run (which is what
//     -count is for). To repeat the tests inside one VM instead, RunTest
//     takes -vm.count=N (go test -run TestVM -vm.count=3 ./drivers/tcflower),
//     which runs them with -test.count=N in one boot.
//   - Decompressed modules are cached per kernel version under
//     os.UserCacheDir()/nicpath-vmtest; the initramfs is written anew for
//     every run into a temporary directory that Run removes.
//   - [Available] says, without booting, whether a run can work on this
//     machine and if not precisely why (missing package, no kernel).
//   - [InVM] is true inside such a VM; tests gate on it.
package vmtest
