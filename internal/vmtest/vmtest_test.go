package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCPIOLayout(t *testing.T) {
	var buf bytes.Buffer
	cw := &cpioWriter{w: &buf}
	cw.Dir("bin", 0o755)
	cw.File("bin/x", 0o755, []byte("hello"))
	cw.Symlink("sh", "bin/x")
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(b)%4 != 0 {
		t.Fatalf("archive length %d is not a multiple of 4", len(b))
	}
	if !bytes.HasPrefix(b, []byte("070701")) {
		t.Fatalf("missing newc magic: %q", b[:6])
	}
	// Second entry: header (110) + "bin\0" padded to 116 = 116 bytes in.
	second := b[116:]
	if !bytes.HasPrefix(second, []byte("070701")) {
		t.Fatalf("second header misaligned: %q", second[:10])
	}
	if got := string(second[54:62]); got != "00000005" {
		t.Fatalf("file size field = %s, want 00000005", got)
	}
	if !bytes.Contains(b, []byte("TRAILER!!!\x00")) {
		t.Fatal("no trailer")
	}
}

func TestResolveModulesOrder(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/a.ko: kernel/b.ko.xz kernel/c.ko\nkernel/b.ko.xz: kernel/c.ko\nkernel/c.ko:\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/d.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := resolveModules(kernel{release: "test", modDir: dir}, []string{"a", "d"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	if got := strings.Join(names, ","); got != "c,b,a" {
		t.Fatalf("load order %s, want c,b,a", got)
	}
	if _, err := resolveModules(kernel{release: "test", modDir: dir}, []string{"nope"}); err == nil {
		t.Fatal("unknown module accepted")
	}
}

func TestCheckFilePath(t *testing.T) {
	for p, ok := range map[string]bool{
		"/opt/nicpath/bin/vswitchd": true, "/work/x": true, "/usr/local/bin/tool": true,
		"opt/x": false, "/tmp/x": false, "/run/x": false, "/var/run/x": false, "/proc/x": false, "/": false,
		"/opt/../tmp/x": false, "/tmpfoo/x": true, "/init": false,
	} {
		if err := checkFilePath(p); (err == nil) != ok {
			t.Errorf("checkFilePath(%q) = %v, want ok %v", p, err, ok)
		}
	}
}

// TestInsideVM runs only inside a VM: it checks what the init script
// promised (modules loaded, environment, iproute2 present).
func TestInsideVM(t *testing.T) {
	if !InVM() {
		t.Skip("runs inside a vmtest VM only (started by TestBootVM)")
	}
	if _, err := os.Stat("/sys/module/veth"); err != nil {
		t.Errorf("veth module not loaded: %v", err)
	}
	if _, err := os.Stat("/usr/sbin/ip"); err != nil {
		t.Errorf("ip not copied: %v", err)
	}
	if b, err := os.ReadFile("/opt/vmtest/hello"); err != nil || string(b) != "hello from the host\n" {
		t.Errorf("Config.Files: /opt/vmtest/hello holds %q (%v)", b, err)
	}
}

// TestBootVM boots the VM with this package's own test binary and checks
// that TestInsideVM passed in it.
func TestBootVM(t *testing.T) {
	SkipHost(t)
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	if err := os.WriteFile(hello, []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := BuildTest(t, dir, "vmtest.test")
	// A boot takes seconds on an idle machine; the bound leaves room for a
	// loaded one.
	res := RunTest(t, Config{
		TestBinary:  bin,
		Args:        []string{"-test.run", "^TestInsideVM$", "-test.v"},
		Modules:     []string{"veth"},
		Executables: []string{"/usr/sbin/ip"},
		Files:       map[string]string{"/opt/vmtest/hello": hello},
		Timeout:     8 * time.Minute,
	})
	if !res.Passed() || !res.PassedTest("TestInsideVM") {
		t.Fatalf("in-VM test failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	// -vm.count=N runs it N times in this one boot.
	if runs, want := strings.Count(res.Output, "--- PASS: TestInsideVM ("), max(*count, 1); runs != want {
		t.Fatalf("TestInsideVM passed %d times in the VM, want %d (-vm.count %d):\n%s", runs, want, *count, res.Output)
	}
}

// PassedTest finds a test's, or a subtest's, verbose PASS line, also
// behind console noise, and no other result or name that merely starts
// with it.
func TestPassedTest(t *testing.T) {
	r := Result{Output: "=== RUN   TestA\r\n--- PASS: TestA (1.00s)\r\n    --- PASS: TestB/sub (0.01s)\n--- FAIL: TestC (0.00s)\n--- SKIP: TestD (0.00s)\n--- PASS: TestEx (0.00s)\n[   12.5] veth: --- PASS: TestF (0.00s)\n"}
	for name, want := range map[string]bool{"TestA": true, "TestB/sub": true, "TestB": false, "TestC": false, "TestD": false, "TestE": false, "TestEx": true, "TestF": true} {
		if got := r.PassedTest(name); got != want {
			t.Errorf("PassedTest(%q) = %v, want %v", name, got, want)
		}
	}
}

// -vm.count becomes -test.count inside the VM, after the test's own
// arguments, which it leaves as they were.
func TestWithCount(t *testing.T) {
	args := make([]string, 1, 4)
	args[0] = "-test.run=^TestX$"
	if got := withCount(args, 0); strings.Join(got, " ") != "-test.run=^TestX$" {
		t.Fatalf("count 0: %q", got)
	}
	got := withCount(args, 3)
	if strings.Join(got, " ") != "-test.run=^TestX$ -test.count=3" {
		t.Fatalf("count 3: %q", got)
	}
	if withCount(args, 2); len(args) != 1 || strings.Join(got, " ") != "-test.run=^TestX$ -test.count=3" {
		t.Fatalf("withCount changed its argument or an earlier result: %q %q", args, got)
	}
}
