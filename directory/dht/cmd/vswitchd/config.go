package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"gopkg.in/yaml.v3"

	"github.com/nicpath/nicpath/directory"
	"github.com/nicpath/nicpath/directory/dht"
)

// file is the DHT configuration's YAML:
//
//	key: node.key                 # a file: the node's ed25519 seed, 64 hex digits
//	listen: [/ip4/198.18.0.1/tcp/4001, /ip4/198.18.0.1/udp/4001/quic-v1]
//	transports: [tcp, quic]       # default both
//	security: [noise, tls]        # in order of preference; default both
//	bootstrap: [/ip4/198.18.0.2/tcp/4001/p2p/12D3Koo…]
//	peers: [12D3Koo…, …]          # the deployment: every other peer is refused
//	trusted: [<64 hex digits>]    # the VM manager's ed25519 public keys
//	protocol_prefix: /nicpath
//	quorum: 3
//	cache: {ttl: 30s, negative_ttl: 2s, timeout: 1s}
//	queue_len: 16
//	max_queues: 4096
//	join_timeout: 30s
type file struct {
	Key            string   `yaml:"key"`
	Listen         []string `yaml:"listen"`
	Transports     []string `yaml:"transports"`
	Security       []string `yaml:"security"`
	Bootstrap      []string `yaml:"bootstrap"`
	Peers          []string `yaml:"peers"`
	Trusted        []string `yaml:"trusted"`
	ProtocolPrefix string   `yaml:"protocol_prefix"`
	Quorum         int      `yaml:"quorum"`
	Cache          struct {
		TTL         time.Duration `yaml:"ttl"`
		NegativeTTL time.Duration `yaml:"negative_ttl"`
		Timeout     time.Duration `yaml:"timeout"`
	} `yaml:"cache"`
	QueueLen    int           `yaml:"queue_len"`
	MaxQueues   int           `yaml:"max_queues"`
	JoinTimeout time.Duration `yaml:"join_timeout"`
}

// Config is a loaded DHT configuration.
type Config struct {
	Node                dht.Config
	Cache               directory.CacheConfig
	QueueLen, MaxQueues int
	JoinTimeout         time.Duration
}

// LoadConfig reads a DHT configuration; the key file is relative to its
// directory.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := parseConfig(b, func(name string) ([]byte, error) {
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		return os.ReadFile(name)
	})
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parseConfig parses a configuration's YAML; readKey reads the key file.
func parseConfig(b []byte, readKey func(string) ([]byte, error)) (Config, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return Config{}, err
	}
	var c Config
	if f.Key == "" {
		return c, errors.New("key: the node's key file is required")
	}
	kb, err := readKey(f.Key)
	if err != nil {
		return c, fmt.Errorf("key: %w", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return c, fmt.Errorf("key %s: want %d hex digits (an ed25519 seed)", f.Key, 2*ed25519.SeedSize)
	}
	if c.Node.Key, err = crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed)); err != nil {
		return c, fmt.Errorf("key: %w", err)
	}
	if len(f.Listen) == 0 {
		return c, errors.New("listen: at least one address is required")
	}
	for _, l := range f.Listen {
		if _, err := ma.NewMultiaddr(l); err != nil {
			return c, fmt.Errorf("listen %q: %w", l, err)
		}
	}
	c.Node.Listen, c.Node.Transports, c.Node.Security = f.Listen, f.Transports, f.Security
	for _, s := range f.Bootstrap {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return c, fmt.Errorf("bootstrap %q: %w", s, err)
		}
		c.Node.Bootstrap = append(c.Node.Bootstrap, *ai)
	}
	if len(f.Peers) == 0 {
		return c, errors.New("peers: the deployment's peer IDs are required")
	}
	for _, s := range f.Peers {
		id, err := peer.Decode(s)
		if err != nil {
			return c, fmt.Errorf("peers %q: %w", s, err)
		}
		c.Node.Peers = append(c.Node.Peers, id)
	}
	if len(f.Trusted) == 0 {
		return c, errors.New("trusted: the VM manager's public key is required")
	}
	for _, s := range f.Trusted {
		k, err := hex.DecodeString(s)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return c, fmt.Errorf("trusted %q: want %d hex digits (an ed25519 public key)", s, 2*ed25519.PublicKeySize)
		}
		c.Node.Trusted = append(c.Node.Trusted, ed25519.PublicKey(k))
	}
	if f.Quorum < 0 || f.QueueLen < 0 || f.MaxQueues < 0 || f.JoinTimeout < 0 || f.Cache.TTL < 0 || f.Cache.NegativeTTL < 0 || f.Cache.Timeout < 0 {
		return c, errors.New("quorum, queue_len, max_queues and the durations cannot be negative")
	}
	c.Node.ProtocolPrefix, c.Node.Quorum = f.ProtocolPrefix, f.Quorum
	c.Cache = directory.CacheConfig{TTL: f.Cache.TTL, NegativeTTL: f.Cache.NegativeTTL, Timeout: f.Cache.Timeout}
	c.QueueLen, c.MaxQueues, c.JoinTimeout = f.QueueLen, f.MaxQueues, f.JoinTimeout
	if c.JoinTimeout == 0 {
		c.JoinTimeout = defaultJoin
	}
	return c, nil
}
