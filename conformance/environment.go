package conformance

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

// modulePath is nicpath's module, whose version a report names.
const modulePath = "github.com/nicpath/nicpath"

// Environment is what a run ran on: enough to reproduce it or to tell two
// reports apart.
type Environment struct {
	// Kernel is the running kernel's release (uname -r); empty off Linux.
	Kernel string `json:"kernel,omitempty"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	// Go is the toolchain the binary was built with.
	Go string `json:"go"`
	// Library is nicpath's module version as the binary was built
	// ("(devel)" for a build inside the module), Revision and Modified the
	// version control state it was built from, when Go recorded it.
	Library  string `json:"library"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Devices are the devices behind the NIC's ports (Target.Devices);
	// DevicesError says why they could not be read.
	Devices      []DeviceInfo `json:"devices,omitempty"`
	DevicesError string       `json:"devices_error,omitempty"`
}

// DeviceInfo is one device behind a NIC, as ethtool -i shows it: a field
// the device does not report is empty.
type DeviceInfo struct {
	Interface string `json:"interface"`
	Role      string `json:"role,omitempty"` // "vport", "uplink", "tunnel vxlan", …
	Driver    string `json:"driver,omitempty"`
	Version   string `json:"version,omitempty"`
	Firmware  string `json:"firmware,omitempty"`
	BusInfo   string `json:"bus_info,omitempty"`
}

// HostEnvironment describes the running host and binary: the kernel
// release, the Go toolchain, and nicpath's version from the build
// information.
func HostEnvironment() *Environment {
	env := &Environment{OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version(), Library: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		env.Kernel = strings.TrimSpace(string(b))
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return env
	}
	env.Go = bi.GoVersion
	switch {
	case bi.Main.Path == modulePath:
		env.Library = modulePath + " " + bi.Main.Version
	default:
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				env.Library = modulePath + " " + d.Version
				if d.Replace != nil {
					env.Library += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
		if env.Library == "unknown" && strings.HasPrefix(bi.Path, modulePath) {
			// A test binary: its main module is the one under test.
			env.Library = modulePath + " (devel)"
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			env.Revision = s.Value
		case "vcs.modified":
			env.Modified = s.Value == "true"
		}
	}
	return env
}

// String is the environment on one line.
func (e *Environment) String() string {
	if e == nil {
		return ""
	}
	var parts []string
	if e.Kernel != "" {
		parts = append(parts, "kernel "+e.Kernel)
	}
	parts = append(parts, e.OS+"/"+e.Arch, e.Go, e.library())
	for _, d := range e.Devices {
		parts = append(parts, d.String())
	}
	if e.DevicesError != "" {
		parts = append(parts, "devices: "+e.DevicesError)
	}
	return strings.Join(parts, "; ")
}

// library is the library version with its revision.
func (e *Environment) library() string {
	s := e.Library
	if e.Revision != "" {
		s += " rev " + e.Revision
		if e.Modified {
			s += " (modified)"
		}
	}
	return s
}

// String is the device as "interface (role): driver version, firmware".
func (d DeviceInfo) String() string {
	s := d.Interface
	if d.Role != "" {
		s += " (" + d.Role + ")"
	}
	s += ": driver " + orNone(d.Driver)
	if d.Version != "" {
		s += " " + d.Version
	}
	s += fmt.Sprintf(", firmware %s", orNone(d.Firmware))
	if d.BusInfo != "" {
		s += ", bus " + d.BusInfo
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
