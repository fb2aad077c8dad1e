package remote

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nicpath/nicpath/securechan"
)

// Key files. Both ends pin each other's static Curve25519 keys, read from
// small text files:
//
//	# comment
//	private-key 6f1c…(64 hex digits)       the node's own key (mode 0600)
//	public-key  8e02…(64 hex digits) [name] a key: the node's own public
//	                                        half, or a pinned peer's
//
// A private key file holds one private-key line and, as a check, the
// public-key line of its public half; a public key file (what a node gives
// its peers to pin) holds public-key lines only. Blank lines and lines
// starting with '#' are ignored. nicd keygen writes both.

// KeyFile is a parsed key file.
type KeyFile struct {
	Private *securechan.PrivateKey
	Public  []NamedKey
}

// NamedKey is a public key with the name its line gives it.
type NamedKey struct {
	Key  securechan.PublicKey
	Name string
}

// ErrKeyFile is a key file that does not follow the format.
var ErrKeyFile = errors.New("remote: bad key file")

// maxKeyFile bounds a key file: a few lines per key.
const maxKeyFile = 1 << 20

// ParseKeyFile parses a key file's contents.
func ParseKeyFile(data []byte) (*KeyFile, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: %d bytes", ErrKeyFile, len(data))
	}
	kf := &KeyFile{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		f := strings.Fields(s)
		bad := func(why string) error { return fmt.Errorf("%w: line %d: %s", ErrKeyFile, i+1, why) }
		switch f[0] {
		case "private-key":
			if len(f) != 2 {
				return nil, bad("want: private-key HEX")
			}
			if kf.Private != nil {
				return nil, bad("a second private key")
			}
			var k securechan.PrivateKey
			if err := decodeKeyHex(f[1], k[:]); err != nil {
				return nil, bad(err.Error())
			}
			kf.Private = &k
		case "public-key":
			if len(f) < 2 || len(f) > 3 {
				return nil, bad("want: public-key HEX [name]")
			}
			var nk NamedKey
			if err := decodeKeyHex(f[1], nk.Key[:]); err != nil {
				return nil, bad(err.Error())
			}
			if len(f) == 3 {
				nk.Name = f[2]
			}
			kf.Public = append(kf.Public, nk)
		default:
			return nil, bad(fmt.Sprintf("unknown keyword %q", f[0]))
		}
	}
	if kf.Private != nil {
		pub := kf.Private.Public()
		for _, nk := range kf.Public {
			if nk.Key != pub {
				return nil, fmt.Errorf("%w: a private key file's public-key line must be its own public half", ErrKeyFile)
			}
		}
	}
	return kf, nil
}

func decodeKeyHex(s string, out []byte) error {
	if len(s) != 2*len(out) {
		return fmt.Errorf("want %d hex digits, got %d", 2*len(out), len(s))
	}
	if _, err := hex.Decode(out, []byte(s)); err != nil {
		return fmt.Errorf("not hex: %v", err)
	}
	if bytes.Equal(out, make([]byte, len(out))) {
		return errors.New("an all-zero key")
	}
	return nil
}

// FormatPrivateKey returns the contents of a private key file for k.
func FormatPrivateKey(k securechan.PrivateKey, name string) []byte {
	pub := k.Public()
	return fmt.Appendf(nil, "# nicpath remote: private key; keep it on this node only (mode 0600)\nprivate-key %s\npublic-key %s%s\n",
		hex.EncodeToString(k[:]), pub, nameSuffix(name))
}

// FormatPublicKey returns the contents of a public key file, for the peer
// to pin.
func FormatPublicKey(k securechan.PublicKey, name string) []byte {
	return fmt.Appendf(nil, "# nicpath remote: public key; pin it on the peer\npublic-key %s%s\n", k, nameSuffix(name))
}

func nameSuffix(name string) string {
	name = strings.Join(strings.Fields(name), "_")
	if name == "" {
		return ""
	}
	return " " + name
}

// GenerateKeyFiles writes a fresh key pair: the private key file (mode
// 0600, not overwritten if it exists) and the public key file.
func GenerateKeyFiles(rand io.Reader, privPath, pubPath, name string) (securechan.PublicKey, error) {
	pub, priv, err := securechan.GenerateKey(rand)
	if err != nil {
		return pub, err
	}
	f, err := os.OpenFile(privPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return pub, err
	}
	if _, err := f.Write(FormatPrivateKey(priv, name)); err != nil {
		f.Close()
		return pub, err
	}
	if err := f.Close(); err != nil {
		return pub, err
	}
	if pubPath != "" {
		if err := os.WriteFile(pubPath, FormatPublicKey(pub, name), 0o644); err != nil {
			return pub, err
		}
	}
	return pub, nil
}

// LoadPrivateKey reads a private key file. A file that others than its
// owner may read is refused, as ssh refuses one.
func LoadPrivateKey(path string) (securechan.PrivateKey, error) {
	var k securechan.PrivateKey
	st, err := os.Stat(path)
	if err != nil {
		return k, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return k, fmt.Errorf("%w: %s: mode %v lets others read the private key; chmod 600 it", ErrKeyFile, path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return k, err
	}
	kf, err := ParseKeyFile(data)
	if err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	if kf.Private == nil {
		return k, fmt.Errorf("%w: %s: no private-key line", ErrKeyFile, path)
	}
	return *kf.Private, nil
}

// LoadPublicKeys reads the public keys of one or more files (pinned
// peers). A file with a private key is refused: a peer's key file never
// holds one.
func LoadPublicKeys(paths ...string) ([]securechan.PublicKey, error) {
	var out []securechan.PublicKey
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		kf, err := ParseKeyFile(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if kf.Private != nil {
			return nil, fmt.Errorf("%w: %s holds a private key; pin the peer's public key file instead", ErrKeyFile, p)
		}
		if len(kf.Public) == 0 {
			return nil, fmt.Errorf("%w: %s: no public-key line", ErrKeyFile, p)
		}
		for _, nk := range kf.Public {
			out = append(out, nk.Key)
		}
	}
	return out, nil
}
