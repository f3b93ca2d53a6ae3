package proc

import (
	"github.com/fanaudit/fanaudit/enrich/internal/proctest"
	"strings"
	"testing"
)

const hexID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestContainerFromProc goes through a fixture /proc tree, so the whole
// chain from /proc/PID/cgroup to container.id is covered.
func TestContainerFromProc(t *testing.T) {
	tests := []struct {
		name        string
		cgroup      string
		wantID      string
		wantRuntime string
	}{
		{"docker systemd", "0::/system.slice/docker-" + hexID + ".scope\n", hexID, RuntimeDocker},
		{"docker cgroupfs v1", "12:pids:/docker/" + hexID + "\n1:name=systemd:/docker/" + hexID + "\n", hexID, RuntimeDocker},
		{"docker cgroupfs v2", "0::/docker/" + hexID + "\n", hexID, RuntimeDocker},
		{"containerd k8s systemd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-" + hexID + ".scope\n", hexID, RuntimeContainerd},
		{"cri-o k8s systemd", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-" + hexID + ".scope\n", hexID, RuntimeCRIO},
		{"cri-o conmon is not the container", "0::/kubepods.slice/kubepods-podabc.slice/crio-conmon-" + hexID + ".scope\n", "", ""},
		{"k8s cgroupfs: runtime unknown", "0::/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + hexID + "\n", hexID, ""},
		{"podman rootful", "0::/machine.slice/libpod-" + hexID + ".scope/container\n", hexID, RuntimePodman},
		{"podman rootless", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + hexID + ".scope\n", hexID, RuntimePodman},
		{"podman cgroupfs", "0::/libpod_parent/libpod-" + hexID + "\n", hexID, RuntimePodman},
		{"podman conmon", "0::/machine.slice/libpod-conmon-" + hexID + ".scope\n", "", ""},
		{"host process", "0::/user.slice/user-0.slice/session-1.scope\n", "", ""},
		{"root", "0::/\n", "", ""},
		{"short hex is no id", "0::/docker/0123abcd\n", "", ""},
		{"upper-case hex is no id", "0::/docker/" + strings.ToUpper(hexID) + "\n", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			proctest.Write(t, root, proctest.Fixture{Pid: 10, Exe: "/bin/true", Start: 5, Cgroup: tc.cgroup})
			c := NewCache(Config{Root: root, CmdlineMax: 4096, Size: 8, TTL: 1e9})
			e := c.Resolve(10, t0, true)
			if e == nil {
				t.Fatal("no entry")
			}
			if e.ContainerID != tc.wantID || e.Runtime != tc.wantRuntime {
				t.Fatalf("got (%q, %q), want (%q, %q)", e.ContainerID, e.Runtime, tc.wantID, tc.wantRuntime)
			}
			if want := strings.TrimSpace(tc.cgroup); !strings.HasSuffix(want, e.CgroupPath) {
				t.Fatalf("cgroup path %q not from %q", e.CgroupPath, want)
			}
		})
	}
}
