package config

import (
	"bytes"
	"fmt"
	"io"

	"github.com/BurntSushi/toml"
)

// WriteTOML prints the effective config (defaults filled in) as TOML. It
// is itself a valid config. Secrets print as Redacted by their type.
func (c *Config) WriteTOML(w io.Writer, source string) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# fanaudit effective config, from %s\n", source)
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return fmt.Errorf("encode effective config: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// EventActions lists the event.action values `events` accepts.
func EventActions() []string { return append([]string(nil), fileActions...) }
