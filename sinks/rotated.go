package sinks

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// backup is one rotated file, possibly present both plain and gzipped
// when a compression was cut short.
type backup struct {
	at    time.Time
	names []string // in Path's directory
}

// gzTmp is what follows a backup's name in its compression temp file,
// before the random part: NAME.gz.tmp.RANDOM.
const gzTmp = ".gz.tmp."

// backups lists Path's rotated files in dir, oldest first. Names that do
// not parse as Path.TIMESTAMP[.gz], and anything that fails the file
// rules the sink writes by (a planted link, a file of another user, one
// with more links), are not ours and are left alone: in a directory
// others can write, a user could otherwise plant backup names that push
// the real backups out of MaxBackups, or have the agent delete their
// files. It also returns the temp files of compressions a crash cut
// short.
func (s *File) backups(dir *safefile.Dir) ([]backup, []string, error) {
	base := filepath.Base(s.opts.Path)
	ents, err := dir.ReadDir()
	if err != nil {
		return nil, nil, err
	}
	byTime := map[time.Time]*backup{}
	var stale []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || dir.Check(e.Name()) != nil {
			continue
		}
		if i := strings.Index(rest, gzTmp); i > 0 {
			if _, err := time.Parse(backupLayout, rest[:i]); err == nil {
				stale = append(stale, e.Name())
			}
			continue
		}
		at, err := time.Parse(backupLayout, strings.TrimSuffix(rest, ".gz"))
		if err != nil {
			continue
		}
		b := byTime[at]
		if b == nil {
			b = &backup{at: at}
			byTime[at] = b
		}
		b.names = append(b.names, e.Name())
	}
	out := make([]backup, 0, len(byTime))
	for _, b := range byTime {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b backup) int { return a.at.Compare(b.at) })
	return out, stale, nil
}

// prune removes the oldest backups beyond MaxBackups, and temp files that
// a crash left behind (the janitor is the only compressor, and it calls
// prune between compressions).
func (s *File) prune(dir *safefile.Dir) error {
	bs, stale, err := s.backups(dir)
	if err != nil {
		return err
	}
	var errs []error
	remove := func(name string) {
		if err := dir.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, name := range stale {
		remove(name)
	}
	if s.opts.MaxBackups > 0 {
		for _, b := range bs[:max(len(bs)-s.opts.MaxBackups, 0)] {
			for _, name := range b.names {
				remove(name)
			}
		}
	}
	return errors.Join(errs...)
}

// compressFile gzips name into name.gz and removes name, all in dir. The
// data goes through a temp file so that a crash never leaves a truncated
// .gz that looks complete; until the rename the plain file is the backup.
// The backup is opened without following a link (and must be root's),
// the temp file is created exclusively under an unpredictable name
// (NAME.gz.tmp.RANDOM), and the rename replaces whatever sits at
// NAME.gz without writing through it.
func compressFile(dir *safefile.Dir, name string, mode os.FileMode) (err error) {
	src, err := dir.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer src.Close()
	dst, tmp, err := dir.CreateTemp(name+gzTmp, mode)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			_ = dir.Remove(tmp)
		}
	}()
	zw, err := gzip.NewWriterLevel(dst, gzip.BestSpeed)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if _, err := io.Copy(zw, src); err != nil {
		return fmt.Errorf("compress %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress %s: %w", name, err)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("compress: sync %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("compress: close %s: %w", tmp, err)
	}
	if err := dir.Rename(tmp, name+".gz"); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := dir.Remove(name); err != nil {
		return fmt.Errorf("compress: remove %s: %w", name, err)
	}
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	return nil
}
