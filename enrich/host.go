package enrich

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
)

// readHost reads the host fields once. A missing file leaves its field
// empty (unknown) and is returned in errs for logging.
func readHost(procRoot, etcRoot string) (*record.Host, []error) {
	var errs []error
	one := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("host: %w", err))
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return &record.Host{
		Hostname: one(filepath.Join(procRoot, "sys/kernel/hostname")),
		ID:       one(filepath.Join(etcRoot, "machine-id")),
		BootID:   one(filepath.Join(procRoot, "sys/kernel/random/boot_id")),
		Kernel:   one(filepath.Join(procRoot, "sys/kernel/osrelease")),
	}, errs
}

// bootTime reads btime from /proc/stat, the base of process start times.
func bootTime(procRoot string) (time.Time, error) {
	path := filepath.Join(procRoot, "stat")
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			s, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time: %s: btime %q: %w", path, v, err)
			}
			return time.Unix(s, 0).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("boot time: %s: no btime line", path)
}
