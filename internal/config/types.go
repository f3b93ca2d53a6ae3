package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("10s",
// "500ms"). A bare TOML integer is an error, not nanoseconds: "5" meant
// as seconds would otherwise become 5ns.
type Duration struct{ time.Duration }

// UnmarshalTOML accepts only a TOML string.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			return fmt.Errorf("a duration is a string with a unit, like \"%ds\", not the bare number %d", n, n)
		}
		return fmt.Errorf("a duration is a string with a unit, like \"10s\", not %s", tomlTypeName(v))
	}
	x, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (like \"500ms\", \"10s\" or \"5m\")", s)
	}
	d.Duration = x
	return nil
}

// MarshalText prints the duration in Go syntax, for the effective config.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Mode is a permission mode: an octal string ("0600") or a TOML integer
// (0o600). It prints as "0600".
type Mode uint32

// UnmarshalTOML accepts the TOML integer or string form. A TOML integer
// is taken as is, so 0o600 means 0600 and a decimal 600 is out of range.
func (m *Mode) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 || x > 0o777 {
			return fmt.Errorf("mode %d is not within 0o000 to 0o777 (write 0o600 or \"0600\")", x)
		}
		*m = Mode(x)
		return nil
	case string:
		s := strings.TrimPrefix(strings.TrimPrefix(x, "0o"), "0O")
		n, err := strconv.ParseUint(s, 8, 32)
		if err != nil || n > 0o777 {
			return fmt.Errorf("mode %q is not an octal mode within 0000 to 0777", x)
		}
		*m = Mode(n)
		return nil
	default:
		return fmt.Errorf("a mode is an octal string like \"0600\" or an integer like 0o600, not %s", tomlTypeName(v))
	}
}

// MarshalText prints the mode in octal.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// FileMode is m as an os.FileMode.
func (m Mode) FileMode() os.FileMode { return os.FileMode(m) }

// Redacted is what a Secret prints as.
const Redacted = "REDACTED"

// Secret holds a credential. However it is printed (fmt verbs, text,
// JSON, TOML, a log field), it shows Redacted, so that neither the
// effective config nor a log line can leak it; Reveal hands the value to
// the one place that needs it.
type Secret struct{ value string }

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{value: v} }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return Redacted
}

// GoString covers %#v.
func (s Secret) GoString() string { return "config.Secret(" + strconv.Quote(s.String()) + ")" }

// Format covers every fmt verb, including %v of a struct holding s.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(s.String()))
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, s.GoString())
	default:
		_, _ = io.WriteString(f, s.String())
	}
}

// MarshalText covers TOML, JSON and log encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ErrSecret is wrapped by the errors of Password.
var ErrSecret = errors.New("secret unavailable")

// Password reads the SASL password from password_file (trailing newlines
// removed) or from the environment variable password_env. lookupEnv is
// os.LookupEnv outside tests. The error names neither the password nor
// the key: the caller knows which key it asked for (PasswordKey).
func (s KafkaSASL) Password(lookupEnv func(string) (string, bool)) (Secret, error) {
	var pw string
	switch {
	case s.PasswordFile != "":
		b, err := readLimited(s.PasswordFile, 64<<10)
		if err != nil {
			return Secret{}, fmt.Errorf("%w: %w", ErrSecret, err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	case s.PasswordEnv != "":
		v, ok := lookupEnv(s.PasswordEnv)
		if !ok {
			return Secret{}, fmt.Errorf("%w: environment variable %s is not set", ErrSecret, s.PasswordEnv)
		}
		pw = v
	default:
		return Secret{}, fmt.Errorf("%w: neither password_file nor password_env is set", ErrSecret)
	}
	if pw == "" {
		return Secret{}, fmt.Errorf("%w: the password is empty", ErrSecret)
	}
	return NewSecret(pw), nil
}

// PasswordKey is the key, relative to the sink's table, that Password
// reads: "kafka.sasl.password_file" or "kafka.sasl.password_env".
func (s KafkaSASL) PasswordKey() string {
	if s.PasswordFile != "" {
		return "kafka.sasl.password_file"
	}
	return "kafka.sasl.password_env"
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date-time"
	}
	return fmt.Sprintf("a %T", v)
}
