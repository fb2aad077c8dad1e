package main

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const goodConfig = `key: node.key
listen: [/ip4/127.0.0.1/tcp/4001]
bootstrap: [/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWGRUVh7U7CqfGdS4ZPeFXhcQ2LtzMVCyXF2nbUqfMXKj5]
peers: [12D3KooWGRUVh7U7CqfGdS4ZPeFXhcQ2LtzMVCyXF2nbUqfMXKj5]
trusted: [ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c]
cache: {ttl: 30s, timeout: 500ms}
queue_len: 8
`

func readSeed(name string) ([]byte, error) {
	if name != "node.key" {
		return nil, errors.New("no such file")
	}
	return []byte(strings.Repeat("ab", 32) + "\n"), nil
}

func TestParseConfig(t *testing.T) {
	c, err := parseConfig([]byte(goodConfig), readSeed)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Node.Peers) != 1 || len(c.Node.Bootstrap) != 1 || len(c.Node.Trusted) != 1 || c.QueueLen != 8 ||
		c.Cache.Timeout.Milliseconds() != 500 || c.JoinTimeout != defaultJoin || c.Node.Key == nil {
		t.Fatalf("parsed %+v", c)
	}
	for _, tc := range []struct{ edit, want string }{
		{"key: node.key", "key: other.key"},
		{"queue_len: 8", "queue_len: -1"},
		{"queue_len: 8", "queue_lenx: 8"},
		{"peers: [12D3KooWGRUVh7U7CqfGdS4ZPeFXhcQ2LtzMVCyXF2nbUqfMXKj5]", "peers: [nope]"},
		{"trusted: [ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c]", "trusted: [" + hex.EncodeToString([]byte("short")) + "]"},
		{"listen: [/ip4/127.0.0.1/tcp/4001]", "listen: [not-a-multiaddr]"},
	} {
		if _, err := parseConfig([]byte(strings.Replace(goodConfig, tc.edit, tc.want, 1)), readSeed); err == nil {
			t.Errorf("%q accepted", tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("key: node.key\nlisten: [/ip4/1.2.3.4/udp/1/quic-v1]\npeers: []\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfig(b, readSeed)
		if err == nil && (c.Node.Key == nil || len(c.Node.Peers) == 0 || len(c.Node.Trusted) == 0 || len(c.Node.Listen) == 0) {
			t.Fatalf("accepted an incomplete configuration: %+v", c)
		}
	})
}
