package vmtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// module is one loadable kernel module: its name (as insmod sees it after
// decompression) and its path relative to the kernel's module directory.
type module struct {
	name string
	rel  string
}

func modName(rel string) string {
	b := filepath.Base(rel)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	return strings.TrimSuffix(b, ".ko")
}

// normName treats '-' and '_' alike, as the kernel does in module names.
func normName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// resolveModules returns names and their dependencies in load order
// (dependencies first), from the kernel's modules.dep. Built-in modules
// (modules.builtin) are skipped.
func resolveModules(k kernel, names []string) ([]module, error) {
	deps := map[string][]string{} // name -> dep names
	paths := map[string]string{}
	f, err := os.Open(filepath.Join(k.modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.IndexByte(line, ':')
		if i < 0 {
			continue
		}
		n := normName(modName(line[:i]))
		paths[n] = line[:i]
		for _, d := range strings.Fields(line[i+1:]) {
			deps[n] = append(deps[n], normName(modName(d)))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Soft dependencies ("softdep libcrc32c pre: crc32c") are not in
	// modules.dep; their names may be aliases (modules.alias, exact names
	// only). The generic implementation is preferred to CPU-specific ones,
	// which may not load on the emulated CPU.
	aliases := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(k.modDir, "modules.alias")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "alias" {
				if cur, ok := aliases[f[1]]; !ok || !strings.HasSuffix(cur, "_generic") {
					aliases[f[1]] = normName(f[2])
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(k.modDir, "modules.softdep")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 4 || f[0] != "softdep" {
				continue
			}
			n := normName(f[1])
			pre := true
			var extra []string
			for _, w := range f[2:] {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if !pre {
						continue
					}
					w = normName(w)
					if _, ok := paths[w]; !ok {
						if a, ok := aliases[w]; ok {
							w = a
						}
					}
					if _, ok := paths[w]; ok {
						extra = append(extra, w)
					}
				}
			}
			deps[n] = append(extra, deps[n]...)
		}
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(k.modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" {
				builtin[normName(modName(l))] = true
			}
		}
	}
	var order []module
	seen := map[string]bool{}
	var visit func(n string, stack []string) error
	visit = func(n string, stack []string) error {
		if seen[n] {
			return nil
		}
		p, ok := paths[n]
		if !ok {
			if builtin[n] {
				seen[n] = true
				return nil
			}
			return fmt.Errorf("kernel %s has no module %q (needed by %v)", k.release, n, stack)
		}
		seen[n] = true
		for _, d := range deps[n] {
			if err := visit(d, append(stack, n)); err != nil {
				return err
			}
		}
		order = append(order, module{name: n, rel: p})
		return nil
	}
	for _, n := range names {
		if err := visit(normName(n), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleCache makes sure every module is decompressed in the cache directory
// of kernel k and returns that directory. Busybox's insmod takes plain .ko
// files only.
func moduleCache(k kernel, mods []module) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "nicpath-vmtest", k.release, "modules")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, m := range mods {
		dst := filepath.Join(dir, m.name+".ko")
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		src := filepath.Join(k.modDir, m.rel)
		var data []byte
		switch {
		case strings.HasSuffix(src, ".xz"):
			data, err = exec.Command("xz", "-dc", src).Output()
		case strings.HasSuffix(src, ".zst"):
			data, err = exec.Command("zstd", "-dcq", src).Output()
		case strings.HasSuffix(src, ".gz"):
			data, err = exec.Command("gzip", "-dc", src).Output()
		default:
			data, err = os.ReadFile(src)
		}
		if err != nil {
			return "", fmt.Errorf("module %s: %w (xz-utils / zstd installed?)", src, err)
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, dst); err != nil {
			return "", err
		}
	}
	return dir, nil
}
