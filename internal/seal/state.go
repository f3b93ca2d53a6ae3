package seal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return k, fmt.Errorf("%w: %s exists; refusing to overwrite a sealing state (its chain would fork)", ErrState, path)
		}
		return k, fmt.Errorf("%w: %w", ErrState, err)
	}
	if err := writeSync(f, append(b, '\n')); err != nil {
		os.Remove(path)
		return k, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return k, err
	}
	return k, nil
}

func writeSync(f *os.File, b []byte) error {
	_, err := f.Write(b)
	if err == nil {
		err = f.Chmod(0o600) // whatever the umask did
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrState, f.Name(), err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrState, dir, err)
	}
	return nil
}

// loadState reads the state file; it must be a regular file that only
// its owner can read or write.
func loadState(path string) (state, Key, [32]byte, error) {
	var st state
	var k Key
	var head [32]byte
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return st, k, head, fmt.Errorf("%w: %w (create it with fanaudit seal-keygen --state %s)", ErrState, err, path)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, k, head, fmt.Errorf("%w: %w", ErrState, err)
	}
	if !fi.Mode().IsRegular() {
		return st, k, head, fmt.Errorf("%w: %s is not a regular file", ErrState, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return st, k, head, fmt.Errorf("%w: %s has mode %04o; it holds a secret key and must not be readable by others (chmod 600)", ErrState, path, fi.Mode().Perm())
	}
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil {
		return st, k, head, fmt.Errorf("%w: read %s: %w", ErrState, path, err)
	}
	defer clear(b)
	if err := json.Unmarshal(b[:n], &st); err != nil {
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

// saveState replaces the state file atomically: a new file beside it
// (O_EXCL, O_NOFOLLOW), fsync, rename over the old one, fsync of the
// directory. The old key is gone from the file system's view once the
// rename is durable.
func saveState(path string, st state, k *Key, head *[32]byte) error {
	st.Key = k.String()
	st.Head = hex.EncodeToString(head[:])
	b, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	defer clear(b)
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	tmp := path + ".tmp-" + hex.EncodeToString(r[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if err := writeSync(f, append(b, '\n')); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return syncDir(filepath.Dir(path))
}
