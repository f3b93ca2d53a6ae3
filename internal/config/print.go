package config

import (
	"bytes"
	"fmt"
	"io"
	"regexp"

	"github.com/BurntSushi/toml"
)

// secretKeyRE matches keys whose values must never be printed. Matching on
// the printed text rather than on struct fields keeps redaction working for
// option structs owned by the sink packages.
var secretKeyRE = regexp.MustCompile(`(?m)^(\s*[A-Za-z0-9_.-]*(?:password|secret|token|passphrase)[A-Za-z0-9_.-]*\s*=\s*)(.*)$`)

// isSecretValue tells a secret from a reference to one: password_file and
// password_env name where the secret lives, and an empty value hides
// nothing.
func isSecretValue(key, val []byte) bool {
	k := bytes.TrimSpace(bytes.TrimRight(bytes.TrimSpace(key), "="))
	if bytes.HasSuffix(k, []byte("_file")) || bytes.HasSuffix(k, []byte("_env")) {
		return false
	}
	v := string(bytes.TrimSpace(val))
	return v != "" && v != `""` && v != "''"
}

// WriteTOML prints the effective config (defaults filled in) as TOML, with
// secret values replaced by "REDACTED".
func (c *Config) WriteTOML(w io.Writer, source string) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# fanaudit effective config, from %s\n", source)
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return fmt.Errorf("encode effective config: %w", err)
	}
	out := secretKeyRE.ReplaceAllFunc(buf.Bytes(), func(m []byte) []byte {
		sub := secretKeyRE.FindSubmatch(m)
		if !isSecretValue(sub[1], sub[2]) {
			return m
		}
		return append(append([]byte(nil), sub[1]...), `"REDACTED"`...)
	})
	_, err := w.Write(out)
	return err
}
