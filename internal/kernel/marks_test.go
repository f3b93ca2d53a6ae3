package kernel

import "testing"

func TestMountRoot(t *testing.T) {
	mi := []byte(`22 1 0:21 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/a\040b rw - tmpfs tmpfs rw
31 22 0:41 /@home /home rw - btrfs /dev/sdb rw,subvol=/@home
32 22 0:40 /sub /mnt/bind rw - tmpfs tmpfs rw
33 22 0:42 / /mnt/bind rw - tmpfs tmpfs rw
34 22 0:43 /x /mnt/over rw - tmpfs tmpfs rw
`)
	for _, tc := range []struct {
		path        string
		root, mount bool
	}{
		{"/", true, true},
		{"/mnt/a b", true, true},
		{"/home", false, true},
		{"/mnt/bind", true, true}, // the topmost mount counts
		{"/mnt/over", false, true},
		{"/mnt", false, false},
		{"/mnt/a\\040b", false, false},
	} {
		if got := MountRoot(mi, tc.path); got != tc.root {
			t.Errorf("MountRoot(%q) = %v", tc.path, got)
		}
		if got := IsMountPoint(mi, tc.path); got != tc.mount {
			t.Errorf("IsMountPoint(%q) = %v", tc.path, got)
		}
	}
	for _, tc := range []struct{ path, want string }{
		{"/", ""},
		{"/etc", ""},
		{"/home", "/home"},
		{"/home/u/x", "/home"},
		{"/homely", ""},
		{"/mnt/bind/d", ""}, // the topmost mount there shows its whole filesystem
		{"/mnt/over/d", "/mnt/over"},
		{"/mnt/a b/c", ""},
	} {
		if got := PartialMount(mi, tc.path); got != tc.want {
			t.Errorf("PartialMount(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
