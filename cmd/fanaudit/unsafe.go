package main

import (
	"errors"
	"fmt"

	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/safefile"
)

// sinkError names the sink of an error from creating it. A path that
// internal/safefile refused (a directory other users can write, a planted
// link, a spool someone else owns) is a config error: exit 2, one line
// naming the key, such as sinks[0].file.path, and its line.
func sinkError(cfg *config.Config, source string, i int, name, typ string, err error) error {
	var se *safefile.Error
	if errors.As(err, &se) {
		key := fmt.Sprintf("sinks.%d.%s.%s", i, typ, se.Key)
		return wrapConfig(cfg.KeyError(source, key, fmt.Errorf("%s: %s", se.Path, se.Reason)))
	}
	return fmt.Errorf("sink %s: %w", name, err)
}
