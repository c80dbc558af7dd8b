package trackunitsim

import (
	gocrypto "crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// keyFile is the on-disk form of a Sim's keys. Private keys are PKCS #8 DER
// (base64 through encoding/json), which covers RSA, ECDSA and Ed25519 alike.
type keyFile struct {
	SigningKID string         `json:"signingKid"`
	Keys       []keyFileEntry `json:"keys"`
}

type keyFileEntry struct {
	KID   string `json:"kid"`
	Kind  string `json:"kind"`
	Alg   string `json:"alg"`
	PKCS8 []byte `json:"pkcs8"`
}

// SaveKeys writes every private key and the signing kid to path with mode
// 0600, replacing the file atomically, so that another process (a `send`
// command) can LoadSim and sign with the same keys.
func (s *Sim) SaveKeys(path string) error {
	s.mu.Lock()
	f := keyFile{SigningKID: s.signingKID}
	var err error
	for _, k := range s.keys {
		var der []byte
		der, err = x509.MarshalPKCS8PrivateKey(k.priv)
		if err != nil {
			break
		}
		f.Keys = append(f.Keys, keyFileEntry{KID: k.kid, Kind: k.kind, Alg: k.alg, PKCS8: der})
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("trackunitsim: encode key: %w", err)
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("trackunitsim: encode key file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".trackunit-sim-keys-*")
	if err != nil {
		return fmt.Errorf("trackunitsim: save keys: %w", err)
	}
	// CreateTemp already makes the file 0600; the explicit Chmod keeps that
	// true whatever the umask or platform.
	werr := errors.Join(tmp.Chmod(0o600), writeAll(tmp, raw), tmp.Close())
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("trackunitsim: save keys: %w", werr)
	}
	return nil
}

func writeAll(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}

// LoadSim returns a Sim whose keys are read from a file written by SaveKeys;
// everything else (clients, users, counters) starts empty.
func LoadSim(path string, opts Options) (*Sim, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: load keys: %w", err)
	}
	var f keyFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("trackunitsim: load keys %s: %w", path, err)
	}
	if len(f.Keys) == 0 {
		return nil, fmt.Errorf("trackunitsim: load keys %s: no keys", path)
	}
	s := newSim(opts)
	for _, e := range f.Keys {
		parsed, err := x509.ParsePKCS8PrivateKey(e.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("trackunitsim: load keys %s: key %q: %w", path, e.KID, err)
		}
		priv, ok := parsed.(gocrypto.Signer)
		if !ok || e.KID == "" || !slices.Contains(KeyKinds(), e.Kind) {
			return nil, fmt.Errorf("trackunitsim: load keys %s: key %q unusable", path, e.KID)
		}
		s.keys = append(s.keys, &simKey{kid: e.KID, kind: e.Kind, alg: e.Alg, priv: priv})
	}
	s.signingKID = f.SigningKID
	if s.keyLocked("") == nil {
		return nil, fmt.Errorf("trackunitsim: load keys %s: signing key %q missing", path, f.SigningKID)
	}
	return s, nil
}
