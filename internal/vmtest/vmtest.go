package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvInVM is set to "1" in the test binary's environment inside the VM.
const EnvInVM = "NICPATH_IN_VM"

// InVM reports whether this process runs inside a vmtest VM.
func InVM() bool { return os.Getenv(EnvInVM) == "1" }

// endMarker is printed by init after the test binary exits, followed by its
// exit code. It is long and odd enough never to appear in test output.
const endMarker = "NICPATH-VMTEST-EXIT-7f3c"

// Config describes one VM run.
type Config struct {
	// TestBinary is the statically linked executable to run (a `go test -c`
	// binary built with CGO_ENABLED=0).
	TestBinary string
	// Args are passed to TestBinary (e.g. -test.run, -test.v).
	Args []string
	// Env are extra NAME=value pairs for TestBinary.
	Env []string
	// Modules are kernel module names (e.g. "cls_flower"); their
	// dependencies are added and everything is loaded in dependency order.
	// A name the kernel has built in, or does not have, is an error.
	Modules []string
	// Executables are host programs (absolute paths, e.g. /usr/sbin/tc)
	// copied into the VM at the same path with the shared libraries ldd
	// lists for them.
	Executables []string
	// Files are more files for the VM, by their path there (absolute, and
	// outside /proc, /sys, /dev, /run and /tmp, which init mounts over),
	// each copied from the host path it names, executable: other static
	// binaries a test runs (a daemon and its CLI built with CGO_ENABLED=0).
	Files map[string]string
	// Kernel is the kernel release to boot (e.g. "6.1.0-41-amd64"); empty
	// means the newest 6.1 kernel found, or else the newest found.
	Kernel string
	// MemoryMB is the VM's memory; 0 means 1024.
	MemoryMB int
	// CPUs is the number of virtual CPUs; 0 means 2.
	CPUs int
	// Timeout bounds the whole run (building the initramfs and the boot
	// included); 0 means 8 minutes.
	Timeout time.Duration
	// Console, if set, receives the serial console as it arrives.
	Console io.Writer
}

// Result is the outcome of a run that reached the end marker.
type Result struct {
	ExitCode int           // the test binary's exit code
	Output   string        // everything the console printed after init started the test
	Kernel   string        // the kernel release booted
	Boot     time.Duration // from qemu start to the test binary's start
	Total    time.Duration // from qemu start to the end marker
}

// Passed reports whether the test binary exited 0.
func (r *Result) Passed() bool { return r.ExitCode == 0 }

// Available says whether Run can work here: nil, or an error naming what is
// missing (and which Debian package provides it).
func Available() error {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return errors.New("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
	}
	if _, err := busyboxPath(); err != nil {
		return err
	}
	if _, err := findKernel(""); err != nil {
		return err
	}
	return nil
}

func busyboxPath() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if out, err := exec.Command(p, "--list").Output(); err == nil && bytes.Contains(out, []byte("insmod")) {
			// Only the static build runs in an initramfs without libc.
			if f, err := os.ReadFile(p); err == nil && !bytes.Contains(f[:min(len(f), 4096)], []byte("/lib64/ld-linux")) {
				return p, nil
			}
		}
	}
	return "", errors.New("static busybox not found (Debian package busybox-static)")
}

type kernel struct {
	release string
	vmlinuz string
	modDir  string
}

var releaseRe = regexp.MustCompile(`^vmlinuz-(.+)$`)

func findKernel(want string) (kernel, error) {
	ents, _ := filepath.Glob("/boot/vmlinuz-*")
	var rels []string
	for _, e := range ents {
		m := releaseRe.FindStringSubmatch(filepath.Base(e))
		if m == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join("/lib/modules", m[1], "modules.dep")); err != nil {
			continue
		}
		rels = append(rels, m[1])
	}
	if len(rels) == 0 {
		return kernel{}, errors.New("no kernel with modules in /boot and /lib/modules (Debian package linux-image-amd64)")
	}
	sort.Strings(rels)
	rel := rels[len(rels)-1]
	if want != "" {
		rel = ""
		for _, r := range rels {
			if r == want {
				rel = r
			}
		}
		if rel == "" {
			return kernel{}, fmt.Errorf("kernel %s not installed (have %s)", want, strings.Join(rels, ", "))
		}
	} else {
		for _, r := range rels {
			if strings.HasPrefix(r, "6.1.") {
				rel = r
			}
		}
	}
	// /boot/vmlinuz-* is readable by root only on Debian.
	vm := "/boot/vmlinuz-" + rel
	f, err := os.Open(vm)
	if err != nil {
		return kernel{}, fmt.Errorf("kernel image: %w", err)
	}
	f.Close()
	return kernel{release: rel, vmlinuz: vm, modDir: filepath.Join("/lib/modules", rel)}, nil
}

// Run boots a VM, runs cfg.TestBinary in it and returns its result. An error
// means the run itself failed (no end marker, timeout, qemu failure); a test
// failure is a Result with a non-zero ExitCode.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 8 * time.Minute
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	k, err := findKernel(cfg.Kernel)
	if err != nil {
		return Result{}, err
	}
	res := Result{Kernel: k.release}
	dir, err := os.MkdirTemp("", "nicpath-vmtest-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := buildInitramfs(initrd, k, &cfg); err != nil {
		return res, fmt.Errorf("initramfs: %w", err)
	}

	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg", "-cpu", "max",
		"-m", strconv.Itoa(cfg.MemoryMB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-no-reboot", "-nic", "none", "-monitor", "none", "-serial", "stdio",
		"-kernel", k.vmlinuz, "-initrd", initrd,
		// no_timer_check: under emulation on a loaded host the guest's
		// boot-time check that the IO-APIC timer ticks (a busy-wait for a
		// few ticks) can miss them and panic ("IO-APIC + timer doesn't
		// work!"); cloud images boot VMs with it for the same reason. It
		// skips only that check: the timer itself runs as before.
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check rdinit=/init")
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	// qemu dies with this process: a test killed by its timeout leaves
	// no VM running.
	release, err := startTied(cmd)
	if err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	defer release()

	var (
		out      strings.Builder
		gotEnd   bool
		started  bool
		exitCode int
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if cfg.Console != nil {
				fmt.Fprintln(cfg.Console, line)
			}
			if !started && strings.Contains(line, startMarker) {
				started = true
				res.Boot = time.Since(start)
				continue
			}
			if i := strings.Index(line, endMarker); i >= 0 {
				fields := strings.Fields(line[i+len(endMarker):])
				if len(fields) > 0 {
					if n, err := strconv.Atoi(fields[0]); err == nil {
						exitCode, gotEnd = n, true
						res.Total = time.Since(start)
					}
				}
				continue
			}
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}()
	wg.Wait()
	werr := cmd.Wait()
	res.Output = out.String()
	if gotEnd {
		res.ExitCode = exitCode
		return res, nil
	}
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("vm run: no end marker after %v: %w", time.Since(start).Round(time.Second), ctx.Err())
	case werr != nil:
		return res, fmt.Errorf("vm run: qemu: %v: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return res, fmt.Errorf("vm run: the VM stopped without the end marker (kernel panic or init failure?); stderr: %s", strings.TrimSpace(stderr.String()))
}

const startMarker = "NICPATH-VMTEST-START-7f3c"

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func buildInitramfs(dst string, k kernel, cfg *Config) error {
	bb, err := busyboxPath()
	if err != nil {
		return err
	}
	mods, err := resolveModules(k, cfg.Modules)
	if err != nil {
		return err
	}
	cacheDir, err := moduleCache(k, mods)
	if err != nil {
		return err
	}
	files := map[string]string{} // VM path -> host path
	links := map[string]string{} // VM path -> target
	files["/bin/busybox"] = bb
	files["/work/test.bin"] = cfg.TestBinary
	for _, m := range mods {
		files["/lib/modules/"+m.name+".ko"] = filepath.Join(cacheDir, m.name+".ko")
	}
	for _, exe := range cfg.Executables {
		if err := addExecutable(files, links, exe); err != nil {
			return err
		}
	}
	for vmPath, host := range cfg.Files {
		if err := checkFilePath(vmPath); err != nil {
			return err
		}
		files[vmPath] = host
	}

	var initScript strings.Builder
	initScript.WriteString(`#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /var /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ln -s /run /var/run
echo 3 > /proc/sys/kernel/printk
`)
	for _, m := range mods {
		fmt.Fprintf(&initScript, "insmod /lib/modules/%s.ko || echo 'vmtest: insmod %s failed'\n", m.name, m.name)
	}
	initScript.WriteString("ip link set lo up 2>/dev/null || true\ncd /work\n")
	fmt.Fprintf(&initScript, "echo %s\n", startMarker)
	envs := []string{EnvInVM + "=1", "HOME=/tmp", "TMPDIR=/tmp", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	envs = append(envs, cfg.Env...)
	initScript.WriteString("env -i")
	for _, e := range envs {
		initScript.WriteString(" " + shellQuote(e))
	}
	initScript.WriteString(" /work/test.bin")
	for _, a := range cfg.Args {
		initScript.WriteString(" " + shellQuote(a))
	}
	initScript.WriteString(" </dev/null 2>&1\n")
	fmt.Fprintf(&initScript, "echo %s $?\nsync\npoweroff -f\n", endMarker)

	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := &cpioWriter{w: bw}

	// Directories first, parents before children.
	dirs := map[string]bool{"/work": true, "/lib/modules": true}
	for p := range files {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for p := range links {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	dlist := make([]string, 0, len(dirs))
	for d := range dirs {
		dlist = append(dlist, d)
	}
	sort.Strings(dlist)
	for _, d := range dlist {
		cw.Dir(strings.TrimPrefix(d, "/"), 0o755)
	}
	cw.File("init", 0o755, []byte(initScript.String()))
	plist := make([]string, 0, len(files))
	for p := range files {
		plist = append(plist, p)
	}
	sort.Strings(plist)
	for _, p := range plist {
		data, err := os.ReadFile(files[p])
		if err != nil {
			return err
		}
		cw.File(strings.TrimPrefix(p, "/"), 0o755, data)
	}
	for p, t := range links {
		cw.Symlink(strings.TrimPrefix(p, "/"), t)
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// checkFilePath says why a Config.Files path cannot hold a file in the VM.
func checkFilePath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("file %q: want a clean absolute path", p)
	}
	for _, m := range []string{"/proc", "/sys", "/dev", "/run", "/var/run", "/tmp", "/init"} {
		if p == m || strings.HasPrefix(p, m+"/") {
			return fmt.Errorf("file %q: %s is mounted over or made by init in the VM", p, m)
		}
	}
	return nil
}

// addExecutable adds exe and the shared libraries it needs (as ldd lists
// them) to files, keeping their paths; symlinked libraries are resolved.
func addExecutable(files, links map[string]string, exe string) error {
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return fmt.Errorf("executable %s: %w", exe, err)
	}
	files[exe] = real
	out, err := exec.Command("ldd", real).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil
		}
		return fmt.Errorf("ldd %s: %v: %s", exe, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var lib string
		if i := strings.Index(line, "=>"); i >= 0 {
			fs := strings.Fields(line[i+2:])
			if len(fs) > 0 && strings.HasPrefix(fs[0], "/") {
				lib = fs[0]
			}
		} else if fs := strings.Fields(line); len(fs) > 0 && strings.HasPrefix(fs[0], "/") {
			lib = fs[0] // the dynamic loader
		}
		if lib == "" {
			continue
		}
		r, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return err
		}
		files[lib] = r
	}
	// Debian's loader path is /lib64/ld-linux-x86-64.so.2 and /lib is a
	// symlink to /usr/lib on merged-/usr systems: provide both spellings.
	for vmPath, host := range files {
		if strings.HasPrefix(vmPath, "/lib/") || strings.HasPrefix(vmPath, "/lib64/") {
			files["/usr"+vmPath] = host
		}
	}
	_ = links
	return nil
}

// BuildTestBinary compiles the tests of the Go package in pkgDir into a
// static binary at out (CGO_ENABLED=0, so it runs in the initramfs without a
// libc). Extra go flags (e.g. "-race" is impossible without cgo; "-tags", …)
// may be given.
func BuildTestBinary(ctx context.Context, pkgDir, out string, goflags ...string) error {
	args := append([]string{"test", "-c", "-o", out}, goflags...)
	args = append(args, ".")
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c in %s: %v\n%s", pkgDir, err, b)
	}
	return nil
}

func goTool() string {
	if p := filepath.Join(runtimeGOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
