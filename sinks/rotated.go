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
)

// backup is one rotated file, possibly present both plain and gzipped
// when a compression was cut short.
type backup struct {
	at    time.Time
	names []string
}

// backups lists Path's rotated files, oldest first. Names that do not
// parse as Path.TIMESTAMP[.gz] are not ours and are left alone.
func (s *File) backups() ([]backup, error) {
	dir, base := filepath.Split(s.opts.Path)
	ents, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	byTime := map[time.Time]*backup{}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || !e.Type().IsRegular() {
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
		b.names = append(b.names, filepath.Join(dir, e.Name()))
	}
	out := make([]backup, 0, len(byTime))
	for _, b := range byTime {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b backup) int { return a.at.Compare(b.at) })
	return out, nil
}

// prune removes the oldest backups beyond MaxBackups.
func (s *File) prune() error {
	if s.opts.MaxBackups == 0 {
		return nil
	}
	bs, err := s.backups()
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range bs[:max(len(bs)-s.opts.MaxBackups, 0)] {
		for _, name := range b.names {
			if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// compressFile gzips name into name.gz and removes name. The data goes
// through name.gz.tmp so that a crash never leaves a truncated .gz that
// looks complete; until the rename the plain file is the backup.
func compressFile(name string, mode os.FileMode) (err error) {
	src, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer src.Close()
	tmp := name + ".gz.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	if err := dst.Chmod(mode); err != nil {
		return fmt.Errorf("compress: chmod %s: %w", tmp, err)
	}
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
	if err := os.Rename(tmp, name+".gz"); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("compress: remove %s: %w", name, err)
	}
	return nil
}
