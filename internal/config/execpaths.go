package config

import (
	"os"
	"path/filepath"
	"strings"
)

// defaultExecDirs are where executables live on any distribution; the
// agent's own PATH adds the rest.
var defaultExecDirs = [...]string{"/usr", "/bin", "/sbin", "/opt"}

// DefaultExecPaths is [capture] exec_paths' default: /usr, /bin, /sbin,
// /opt and the absolute directories of the agent's PATH, those that exist,
// each once. Marking their filesystems for exec events alone is how a
// process that exits before /proc can be read keeps its executable; it is
// the one mark fanaudit puts on system filesystems, and execs are rare.
func DefaultExecPaths() []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if !filepath.IsAbs(p) {
			return
		}
		p = filepath.Clean(p)
		if seen[p] {
			return
		}
		seen[p] = true
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	for _, d := range defaultExecDirs {
		add(d)
	}
	for _, d := range strings.Split(os.Getenv("PATH"), ":") {
		add(d)
	}
	return out
}
