package proc

import (
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " S 1 100 100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 100 18446744073709551615"
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr string
	}{
		{"plain", "42 (sh)" + tail, Stat{Comm: "sh", PPid: 1, StartTicks: 123456}, ""},
		{"comm with parens and spaces", "42 (a) b (c)" + tail, Stat{Comm: "a) b (c", PPid: 1, StartTicks: 123456}, ""},
		{"newline at end", "42 (x) S 7 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99\n", Stat{Comm: "x", PPid: 7, StartTicks: 99}, ""},
		{"no comm", "42 sh S 1", Stat{}, "no (comm)"},
		{"short", "42 (sh) S 1 2 3", Stat{}, "need 20"},
		{"bad ppid", "42 (sh) S x 2 3", Stat{}, "ppid"},
		{"empty", "", Stat{}, "no (comm)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Creds
		wantErr bool
	}{
		{"full", "Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t100\t101\t101\t101\n", Creds{RUID: 1000, EUID: 0, RGID: 100, EGID: 101}, false},
		{"max id", "Uid:\t4294967295\t1\t1\t1\nGid:\t0\t0\t0\t0", Creds{RUID: 4294967295, EUID: 1}, false},
		{"no gid", "Uid:\t1\t1\t1\t1\n", Creds{}, true},
		{"overflow", "Uid:\t4294967296\t1\t1\t1\nGid:\t0\t0\t0\t0\n", Creds{}, true},
		{"garbage", "Uid:\tx y\nGid:\t0 0\n", Creds{}, true},
		{"one field", "Uid:\t1\nGid:\t0 0\n", Creds{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatus([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{"v2", "0::/system.slice/docker-abc.scope\n", "/system.slice/docker-abc.scope", false},
		{"hybrid prefers v2", "4:memory:/x\n0::/y\n", "/y", false},
		{"v1 only, first non-root", "9:name=systemd:/\n4:memory:/docker/abc\n", "/docker/abc", false},
		{"all root", "1:cpu:/\n", "/", false},
		{"empty", "", "", true},
		{"bad", "garbage\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCgroup([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %q, %v; want %q, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	if got := Cmdline([]byte("sh\x00-c\x00echo x\x00")); got != "sh -c echo x" {
		t.Fatalf("got %q", got)
	}
	if got := Cmdline(nil); got != "" {
		t.Fatalf("got %q", got)
	}
}

func TestIsLoader(t *testing.T) {
	for p, want := range map[string]bool{
		"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": true,
		"/lib/ld-musl-x86_64.so.1":                       true,
		"/usr/bin/ld":                                    false,
		"/usr/bin/dash":                                  false,
		"ld.so":                                          true,
	} {
		if IsLoader(p) != want {
			t.Errorf("IsLoader(%q) = %v", p, !want)
		}
	}
}
