// Package proc owns what enrichment learns about a process: reading and
// parsing /proc/PID under a configurable root, container ids from cgroup
// paths, and the process cache keyed by (pid, start time).
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Stat is what enrichment takes from /proc/PID/stat.
type Stat struct {
	Comm       string
	PPid       int32
	StartTicks uint64 // field 22, clock ticks after boot
}

// ParseStat parses /proc/PID/stat. comm may hold spaces and parentheses, so
// the fields after it are found from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, errors.New("stat: no (comm)")
	}
	st := Stat{Comm: string(b[open+1 : end])}
	rest := b[end+1:]
	// rest: " S ppid pgrp session tty tpgid flags minflt cminflt majflt
	// cmajflt utime stime cutime cstime priority nice threads itreal starttime"
	// starttime is field 22 overall, the 20th after comm.
	field := 0
	for len(rest) > 0 {
		rest = bytes.TrimLeft(rest, " ")
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		tok := bytes.TrimRight(rest[:i], "\n")
		rest = rest[i:]
		field++
		switch field {
		case 2: // ppid
			v, err := strconv.ParseInt(string(tok), 10, 32)
			if err != nil {
				return Stat{}, fmt.Errorf("stat: ppid %q: %w", tok, err)
			}
			st.PPid = int32(v)
		case 20: // starttime
			v, err := strconv.ParseUint(string(tok), 10, 64)
			if err != nil {
				return Stat{}, fmt.Errorf("stat: starttime %q: %w", tok, err)
			}
			st.StartTicks = v
			return st, nil
		}
	}
	return Stat{}, fmt.Errorf("stat: %d fields after comm, need 20", field)
}

// Creds are the ids from /proc/PID/status.
type Creds struct {
	RUID, EUID, RGID, EGID uint32
}

// ParseStatus takes the real and effective uid and gid from /proc/PID/status.
func ParseStatus(b []byte) (Creds, error) {
	var c Creds
	var haveU, haveG bool
	for len(b) > 0 && !(haveU && haveG) {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		switch {
		case bytes.HasPrefix(line, []byte("Uid:")):
			r, e, err := twoIDs(line[4:])
			if err != nil {
				return Creds{}, fmt.Errorf("status Uid: %w", err)
			}
			c.RUID, c.EUID, haveU = r, e, true
		case bytes.HasPrefix(line, []byte("Gid:")):
			r, e, err := twoIDs(line[4:])
			if err != nil {
				return Creds{}, fmt.Errorf("status Gid: %w", err)
			}
			c.RGID, c.EGID, haveG = r, e, true
		}
	}
	if !haveU || !haveG {
		return Creds{}, errors.New("status: no Uid or Gid line")
	}
	return c, nil
}

func twoIDs(b []byte) (uint32, uint32, error) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("%q: want at least 2 ids", b)
	}
	r, err := parseU32(f[0])
	if err != nil {
		return 0, 0, err
	}
	e, err := parseU32(f[1])
	if err != nil {
		return 0, 0, err
	}
	return r, e, nil
}

func parseU32(b []byte) (uint32, error) {
	b = bytes.TrimSpace(b)
	var v uint64
	if len(b) == 0 || len(b) > 10 {
		return 0, fmt.Errorf("bad id %q", b)
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad id %q", b)
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 1<<32-1 {
		return 0, fmt.Errorf("id %q out of range", b)
	}
	return uint32(v), nil
}

// ParseCgroup returns the cgroup v2 path ("0::PATH") when there is one, or
// else the first v1 path that is not the root, since hybrid hosts put the
// container path in only some hierarchies.
func ParseCgroup(b []byte) (string, error) {
	var v1 string
	sawLine := false
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		sawLine = true
		c1 := bytes.IndexByte(line, ':')
		if c1 < 0 {
			return "", fmt.Errorf("cgroup line %q: no ':'", line)
		}
		c2 := bytes.IndexByte(line[c1+1:], ':')
		if c2 < 0 {
			return "", fmt.Errorf("cgroup line %q: one ':'", line)
		}
		path := line[c1+1+c2+1:]
		if string(line[:c1]) == "0" && c2 == 0 {
			return string(path), nil
		}
		if v1 == "" && len(path) > 1 {
			v1 = string(path)
		}
	}
	if !sawLine {
		return "", errors.New("cgroup: empty")
	}
	if v1 == "" {
		v1 = "/"
	}
	return v1, nil
}

// ParseU32 parses a decimal id such as /proc/PID/loginuid.
func ParseU32(b []byte) (uint32, error) { return parseU32(b) }

// Argv is /proc/PID/cmdline as one string, the arguments still separated
// by NUL bytes, without the trailing NUL.
func Argv(b []byte) string {
	return string(bytes.TrimRight(b, "\x00"))
}

// Cmdline turns the NUL-separated /proc/PID/cmdline into one line: NULs
// between arguments become spaces, the trailing NUL goes.
func Cmdline(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	out := make([]byte, len(b))
	for i, c := range b {
		if c == 0 {
			c = ' '
		}
		out[i] = c
	}
	return string(out)
}
