package seal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// state is what the state file holds: the current epoch key, the chain
// head after the last seal line and the epoch counter. Nothing older:
// earlier keys are gone once the file is replaced.
type state struct {
	Version int    `json:"version"`
	KeyID   string `json:"key_id"`
	Epoch   uint64 `json:"epoch"`
	Key     string `json:"key"`
	Head    string `json:"head"`
}

// stateDir opens the state file's directory through safefile: a private
// directory (the agent's own, writable by nobody else), walked without
// following links planted by others.
func stateDir(path string, create bool) (*safefile.Dir, string, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrState, err)
		}
		path = abs
	}
	dir, name := filepath.Split(filepath.Clean(path))
	d, err := safefile.OpenDir(dir, safefile.Options{Key: "seal_state", Create: create, DirMode: 0o700, Private: true})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrState, err)
	}
	return d, name, nil
}

// Keygen creates a new state at path (mode 0600; an existing file, or a
// symlink, is refused) and returns the verification key k_0, which the
// caller prints once and the host should not keep.
func Keygen(path string) (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("%w: random key: %w", ErrState, err)
	}
	st := state{Version: Version, KeyID: k.ID(), Epoch: 0, Key: k.String(), Head: hex.EncodeToString(make([]byte, 32))}
	b, err := json.Marshal(&st)
	if err != nil {
		return k, err
	}
	defer clear(b)
	d, name, err := stateDir(path, true)
	if err != nil {
		return k, err
	}
	defer d.Close()
	f, err := d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return k, fmt.Errorf("%w: %s exists; refusing to overwrite a sealing state (its chain would fork)", ErrState, path)
		}
		return k, fmt.Errorf("%w: %w", ErrState, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.Sync()
	}
	if err != nil {
		_ = d.Remove(name)
		return k, fmt.Errorf("%w: write %s: %w", ErrState, path, err)
	}
	return k, nil
}

// loadState reads the state file; it must be a regular file that only
// its owner can read or write.
func loadState(d *safefile.Dir, name string) (state, Key, [32]byte, error) {
	var st state
	var k Key
	var head [32]byte
	path := filepath.Join(d.Path(), name)
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return st, k, head, fmt.Errorf("%w: %w (create it with fanaudit seal-keygen --state %s)", ErrState, err, path)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, k, head, fmt.Errorf("%w: %w", ErrState, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return st, k, head, fmt.Errorf("%w: %s has mode %04o; it holds a secret key and must not be readable by others (chmod 600)", ErrState, path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return st, k, head, fmt.Errorf("%w: read %s: %w", ErrState, path, err)
	}
	defer clear(b)
	if err := json.Unmarshal(b, &st); err != nil {
		return st, k, head, fmt.Errorf("%w: %s: %w", ErrState, path, err)
	}
	if st.Version != Version {
		return st, k, head, fmt.Errorf("%w: %s: version %d, want %d", ErrState, path, st.Version, Version)
	}
	if k, err = ParseKey(st.Key); err != nil {
		return st, k, head, fmt.Errorf("%w: %s: key: %w", ErrState, path, err)
	}
	st.Key = ""
	hb, err := hex.DecodeString(st.Head)
	if err != nil || len(hb) != 32 {
		return st, k, head, fmt.Errorf("%w: %s: bad head", ErrState, path)
	}
	copy(head[:], hb)
	return st, k, head, nil
}

// saveState replaces the state file atomically (safefile: an O_EXCL temp
// file beside it, fsync, rename over the old one, fsync of the
// directory). The old key is gone from the file system's view once the
// rename is durable.
func saveState(d *safefile.Dir, name string, st state, k *Key, head *[32]byte) error {
	st.Key = k.String()
	st.Head = hex.EncodeToString(head[:])
	b, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	defer clear(b)
	if err := d.WriteFile(name, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return nil
}
