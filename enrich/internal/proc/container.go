package proc

import "strings"

// Container runtimes as reported in container.runtime.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
)

// scopePrefixes are the systemd unit prefixes runtimes give a container's
// scope ("docker-ID.scope"), and the runtime each one proves.
var scopePrefixes = [...]struct{ prefix, runtime string }{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
}

// parentRuntimes name the runtime from the cgroupfs-driver parent directory
// ("/docker/ID", "/libpod_parent/libpod-ID").
var parentRuntimes = [...]struct{ dir, runtime string }{
	{"docker", RuntimeDocker},
	{"libpod_parent", RuntimePodman},
}

// ContainerFromCgroup finds the container id in a cgroup path. The id is a
// 64-hex-digit component, alone or inside a runtime's scope name. Runtime
// is set only where the path proves it; a bare id under kubepods (cgroupfs
// driver) says nothing about which CRI runtime made it, so Runtime stays
// empty. conmon's scopes ("crio-conmon-ID", "libpod-conmon-ID") are the
// monitor, not the container, and yield nothing.
func ContainerFromCgroup(path string) (id, runtime string) {
	parent := ""
	for len(path) > 0 {
		var comp string
		i := strings.IndexByte(path, '/')
		if i < 0 {
			comp, path = path, ""
		} else {
			comp, path = path[:i], path[i+1:]
		}
		if comp == "" {
			continue
		}
		if cid, rt, ok := fromComponent(comp, parent); ok {
			id, runtime = cid, rt
		}
		parent = comp
	}
	return id, runtime
}

func fromComponent(comp, parent string) (id, runtime string, ok bool) {
	name := strings.TrimSuffix(comp, ".scope")
	for _, p := range scopePrefixes {
		if rest, found := strings.CutPrefix(name, p.prefix); found && isHexID(rest) {
			return rest, p.runtime, true
		}
	}
	if !isHexID(name) {
		return "", "", false
	}
	for _, p := range parentRuntimes {
		if parent == p.dir {
			return name, p.runtime, true
		}
	}
	return name, "", true
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
