package sinks

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FsyncMode says when the file sink calls fsync.
type FsyncMode string

const (
	// FsyncNever leaves flushing to the kernel.
	FsyncNever FsyncMode = "never"
	// FsyncInterval syncs dirty data every FsyncInterval, before a
	// rotation, on Reopen and at the end of Run.
	FsyncInterval FsyncMode = "interval"
	// FsyncAlways syncs every batch before settling it as delivered.
	FsyncAlways FsyncMode = "always"
)

// Perm is a permission mode for files and directories. In TOML it may be
// an integer (0o600) or an octal string ("0600"); it prints as "0600".
type Perm os.FileMode

// UnmarshalTOML accepts the TOML integer or string form. A TOML integer
// is taken as is, so 0o600 means 0600; a decimal 600 is rejected by
// Validate because it has bits above 0777.
func (p *Perm) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 || x > 0o7777 {
			return fmt.Errorf("mode %d out of range", x)
		}
		*p = Perm(x)
		return nil
	case string:
		return p.UnmarshalText([]byte(x))
	default:
		return fmt.Errorf("mode must be an octal string like \"0600\" or an integer like 0o600, not %T", v)
	}
}

// UnmarshalText parses an octal mode such as "0600", "600" or "0o600".
func (p *Perm) UnmarshalText(b []byte) error {
	s := strings.TrimPrefix(strings.TrimPrefix(string(b), "0o"), "0O")
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return fmt.Errorf("mode %q is not an octal number", string(b))
	}
	*p = Perm(n)
	return nil
}

// MarshalText prints the mode in octal, for the effective config.
func (p Perm) MarshalText() ([]byte, error) {
	return []byte(p.String()), nil
}

func (p Perm) String() string {
	return fmt.Sprintf("%04o", uint32(p))
}

// OptionError names the config key (relative to the sink's table) that
// failed validation, so the config package can add the table and line.
type OptionError struct {
	Key string
	Err error
}

func (e *OptionError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func optErr(key, format string, args ...any) error {
	return &OptionError{Key: key, Err: fmt.Errorf(format, args...)}
}

// FileOptions configures the file sink.
type FileOptions struct {
	// Path of the live file; rotated files are Path.TIMESTAMP[.gz]. No
	// directory on the way may be writable by a user other than root
	// (unless sticky and root's), and the file is never a symbolic link:
	// see internal/safefile and the security section of
	// docs/operations.md.
	Path string `toml:"path"`
	// FileMode is applied to files the sink creates, whatever the umask.
	FileMode Perm `toml:"file_mode"`
	// DirMode is applied to parent directories the sink creates.
	DirMode Perm `toml:"dir_mode"`
	// MaxSizeMB rotates before the file would exceed it; 0 turns size
	// rotation off.
	MaxSizeMB int `toml:"max_size_mb"`
	// MaxAge rotates a file this long after the sink opened it; 0 = off.
	MaxAge time.Duration `toml:"max_age"`
	// MaxBackups is how many rotated files to keep; 0 keeps all.
	MaxBackups int `toml:"max_backups"`
	// Compress gzips rotated files.
	Compress bool `toml:"compress"`
	// Fsync is never, interval or always.
	Fsync FsyncMode `toml:"fsync"`
	// FsyncInterval is the period for Fsync = interval.
	FsyncInterval time.Duration `toml:"fsync_interval"`
}

// DefaultPath is where the file sink writes unless configured otherwise.
const DefaultPath = "/var/log/fanaudit/events.json"

// DefaultFileOptions returns the documented defaults.
func DefaultFileOptions() FileOptions {
	return FileOptions{
		Path:          DefaultPath,
		FileMode:      0o600,
		DirMode:       0o750,
		MaxSizeMB:     100,
		MaxBackups:    5,
		Fsync:         FsyncInterval,
		FsyncInterval: time.Second,
	}
}

// Defaults sets every field to its default, before a TOML decode
// overwrites the keys that are given.
func (o *FileOptions) Defaults() { *o = DefaultFileOptions() }

// maxSizeMBLimit keeps MaxSizeMB<<20 far from overflowing int64.
const maxSizeMBLimit = 1 << 30

// Validate checks the fields and returns the first problem as an
// *OptionError whose message starts with the key ("path: must be set"):
// one problem, one line, as the command line contract wants.
func (o FileOptions) Validate() error {
	switch {
	case o.Path == "":
		return optErr("path", "must be set")
	case !filepath.IsAbs(o.Path):
		return optErr("path", "must be absolute, got %q", o.Path)
	case strings.HasSuffix(o.Path, "/") || filepath.Base(o.Path) == "." || filepath.Base(o.Path) == "..":
		return optErr("path", "must name a file, got %q", o.Path)
	case o.FileMode > 0o777:
		return optErr("file_mode", "%s has bits outside 0777", o.FileMode)
	case o.DirMode > 0o777:
		return optErr("dir_mode", "%s has bits outside 0777", o.DirMode)
	case o.MaxSizeMB < 0 || o.MaxSizeMB > maxSizeMBLimit:
		return optErr("max_size_mb", "must be between 0 (off) and %d, got %d", maxSizeMBLimit, o.MaxSizeMB)
	case o.MaxAge < 0:
		return optErr("max_age", "must not be negative, got %s", o.MaxAge)
	case o.MaxBackups < 0:
		return optErr("max_backups", "must not be negative, got %d", o.MaxBackups)
	}
	switch o.Fsync {
	case FsyncNever, FsyncAlways:
	case FsyncInterval:
		if o.FsyncInterval <= 0 {
			return optErr("fsync_interval", "must be positive when fsync = \"interval\", got %s", o.FsyncInterval)
		}
	default:
		return optErr("fsync", "must be \"never\", \"interval\" or \"always\", got %q", string(o.Fsync))
	}
	return nil
}
