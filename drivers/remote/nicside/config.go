package nicside

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/drivers/remote"
	"github.com/nicpath/nicpath/drivers/softnic"
	"github.com/nicpath/nicpath/drivers/xdp"
	"github.com/nicpath/nicpath/hal"
	"github.com/nicpath/nicpath/securechan"
)

// Config is the NIC side's configuration file (see the package doc).
type Config struct {
	Driver     string          `yaml:"driver"`
	Key        string          `yaml:"key"`
	Hosts      []string        `yaml:"hosts"`
	Listen     []string        `yaml:"listen"`
	ApplyChunk int             `yaml:"apply_chunk"`
	LogLevel   string          `yaml:"log_level"`
	Softnic    *SoftnicConfig  `yaml:"softnic"`
	XDP        *XDPConfig      `yaml:"xdp"`
	TCFlower   *TCFlowerConfig `yaml:"tcflower"`

	dir      string
	level    slog.Level
	private  securechan.PrivateKey
	hostKeys []securechan.PublicKey
}

// PortConfig is one port of the served NIC.
type PortConfig struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // vport or uplink
	MAC  string `yaml:"mac"`
	MTU  int    `yaml:"mtu"`
	ID   uint32 `yaml:"id"` // xdp, tcflower: the port's hal ID (0: its position)
}

// SoftnicConfig configures driver softnic.
type SoftnicConfig struct {
	Device   string       `yaml:"device"`
	Crypto   bool         `yaml:"crypto"`
	MaxRules int          `yaml:"max_rules"`
	MaxBatch int          `yaml:"max_batch"`
	Binding  string       `yaml:"binding"`
	NetNS    string       `yaml:"netns"`
	Ports    []PortConfig `yaml:"ports"`
}

// XDPConfig configures driver xdp (xdp.Config).
type XDPConfig struct {
	NetNS    string       `yaml:"netns"`
	Mode     string       `yaml:"mode"`
	MaxRules int          `yaml:"max_rules"`
	MaxBatch int          `yaml:"max_batch"`
	Ports    []PortConfig `yaml:"ports"`
}

// TCFlowerConfig configures driver tcflower (tcflower.Config).
type TCFlowerConfig struct {
	NetNS     string            `yaml:"netns"`
	Placement string            `yaml:"placement"`
	Tunnels   map[string]string `yaml:"tunnels"`
	MaxRules  int               `yaml:"max_rules"`
	MaxBatch  int               `yaml:"max_batch"`
	Ports     []PortConfig      `yaml:"ports"`
}

// LoadConfig reads and checks the configuration, and loads the keys it
// names. Errors name the file and the field.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &Config{dir: filepath.Dir(path)}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", path, field, fmt.Sprintf(format, args...))
	}
	sections := map[string]bool{"softnic": c.Softnic != nil, "xdp": c.XDP != nil, "tcflower": c.TCFlower != nil}
	switch c.Driver {
	case "softnic", "xdp", "tcflower":
		if !sections[c.Driver] {
			return nil, bad(c.Driver, "the %s driver needs its section", c.Driver)
		}
		for name, set := range sections {
			if set && name != c.Driver {
				return nil, bad(name, "a section for %s, but the driver is %s", name, c.Driver)
			}
		}
	case "":
		return nil, bad("driver", "missing: softnic, xdp or tcflower")
	default:
		return nil, bad("driver", "%q: want softnic, xdp or tcflower", c.Driver)
	}
	if len(c.Listen) == 0 {
		return nil, bad("listen", "no address: give unix:PATH, tcp:HOST:PORT or vsock:CID:PORT")
	}
	for i, a := range c.Listen {
		if !strings.HasPrefix(a, "unix:") && !strings.HasPrefix(a, "tcp:") && !strings.HasPrefix(a, "vsock:") {
			return nil, bad(fmt.Sprintf("listen[%d]", i), "%q: want unix:PATH, tcp:HOST:PORT or vsock:CID:PORT", a)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "info":
		c.level = slog.LevelInfo
	case "debug":
		c.level = slog.LevelDebug
	case "warn":
		c.level = slog.LevelWarn
	case "error":
		c.level = slog.LevelError
	default:
		return nil, bad("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Key == "" {
		return nil, bad("key", "missing: this side's private key file (nicd keygen writes one)")
	}
	if c.private, err = remote.LoadPrivateKey(c.rel(c.Key)); err != nil {
		return nil, bad("key", "%v", err)
	}
	if len(c.Hosts) == 0 {
		return nil, bad("hosts", "no host key: nobody could program the NIC")
	}
	for i, h := range c.Hosts {
		ks, err := remote.LoadPublicKeys(c.rel(h))
		if err != nil {
			return nil, bad(fmt.Sprintf("hosts[%d]", i), "%v", err)
		}
		c.hostKeys = append(c.hostKeys, ks...)
	}
	if c.Softnic != nil {
		if len(c.Softnic.Ports) == 0 {
			return nil, bad("softnic.ports", "no port")
		}
		switch c.Softnic.Binding {
		case "", "none", "afpacket":
		default:
			return nil, bad("softnic.binding", "%q: want none or afpacket", c.Softnic.Binding)
		}
	}
	for _, l := range c.limits() {
		switch {
		case l.v < 0:
			return nil, bad(l.field, "%d: want 0 or more (0: the driver's default)", l.v)
		case l.most > 0 && l.v > l.most:
			return nil, bad(l.field, "%d is above the %s driver's maximum, %d", l.v, c.Driver, l.most)
		}
	}
	for sec, ps := range map[string][]PortConfig{"softnic": ports(c.Softnic), "xdp": portsX(c.XDP), "tcflower": portsT(c.TCFlower)} {
		for i, p := range ps {
			field := fmt.Sprintf("%s.ports[%d]", sec, i)
			if p.Name == "" {
				return nil, bad(field, "no name")
			}
			if _, err := kindOf(p.Kind); err != nil {
				return nil, bad(field+".kind", "%v", err)
			}
			if p.MAC != "" {
				if _, err := hal.ParseMAC(p.MAC); err != nil {
					return nil, bad(field+".mac", "%v", err)
				}
			}
		}
	}
	return c, nil
}

// limit is one table size or batch bound of the driver's section: the
// field, its value, and the driver's largest (0: none).
type limit struct {
	field   string
	v, most int
}

// limits are the driver section's max_rules and max_batch.
func (c *Config) limits() []limit {
	switch {
	case c.Softnic != nil:
		return []limit{{"softnic.max_rules", c.Softnic.MaxRules, softnic.MostRules}, {"softnic.max_batch", c.Softnic.MaxBatch, 0}}
	case c.XDP != nil:
		return []limit{{"xdp.max_rules", c.XDP.MaxRules, xdp.MostRules}, {"xdp.max_batch", c.XDP.MaxBatch, 0}}
	case c.TCFlower != nil:
		return []limit{{"tcflower.max_rules", c.TCFlower.MaxRules, 0}, {"tcflower.max_batch", c.TCFlower.MaxBatch, 0}}
	}
	return nil
}

func (c *Config) rel(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

func ports(s *SoftnicConfig) []PortConfig {
	if s == nil {
		return nil
	}
	return s.Ports
}

func portsX(s *XDPConfig) []PortConfig {
	if s == nil {
		return nil
	}
	return s.Ports
}

func portsT(s *TCFlowerConfig) []PortConfig {
	if s == nil {
		return nil
	}
	return s.Ports
}

func kindOf(s string) (hal.PortKind, error) {
	switch s {
	case "vport", "":
		return hal.PortVPort, nil
	case "uplink":
		return hal.PortUplink, nil
	}
	return 0, fmt.Errorf("%q: want vport or uplink", s)
}

// LogLevel is the level log_level names (info by default).
func (c *Config) Level() slog.Level { return c.level }

// HostKeys is how many host keys the configuration pins.
func (c *Config) HostKeys() int { return len(c.hostKeys) }
