package audit

import "strings"

// pathCache maps a file handle key (kernel.Handle.Key: fsid and handle
// bytes) to an escaped absolute path. It is bounded: when full, an
// arbitrary entry (map iteration order is random) makes room, which costs
// at most one open_by_handle_at later.
type pathCache struct {
	max int
	m   map[string]string
}

func newPathCache(max int) *pathCache {
	return &pathCache{max: max, m: make(map[string]string, min(max, 1024))}
}

func (c *pathCache) get(key []byte) (string, bool) {
	p, ok := c.m[string(key)]
	return p, ok
}

// put caches path for key. A hidden path (see hidden) is no name: the
// kernel names every directory a watched bind mount does not show "/"
// plus at most its own name, so that a directory moved into the bind
// mount would keep, for its subdirectories, a name out of scope (rev6).
// It is never cached, and it makes an older entry for key stale.
func (c *pathCache) put(key []byte, path string) {
	if strings.HasPrefix(path, hidden) {
		delete(c.m, string(key))
		return
	}
	if _, ok := c.m[string(key)]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(key)] = path
}

func (c *pathCache) del(key []byte) {
	delete(c.m, string(key))
}

// take returns and removes the entry.
func (c *pathCache) take(key []byte) (string, bool) {
	p, ok := c.m[string(key)]
	if ok {
		delete(c.m, string(key))
	}
	return p, ok
}

// movePrefix rewrites oldDir and every cached path below it to newDir:
// a directory rename changes the path of every directory beneath it, and
// their handles stay the same. Directory renames are rare, so a full scan
// is fine. Moved where no watched mount shows them (newDir is hidden),
// the cached paths go: hidden paths are never cached (see put).
func (c *pathCache) movePrefix(oldDir, newDir string) {
	if strings.HasPrefix(newDir, hidden) {
		c.dropPrefix(oldDir)
		return
	}
	for k, v := range c.m {
		if under(v, oldDir) {
			c.m[k] = newDir + v[len(oldDir):]
		}
	}
}

// swapPrefix trades the cached paths of a and b and of everything below
// them: renameat2 RENAME_EXCHANGE of two directories.
func (c *pathCache) swapPrefix(a, b string) {
	if strings.HasPrefix(a, hidden) || strings.HasPrefix(b, hidden) {
		c.dropPrefix(a)
		c.dropPrefix(b)
		return
	}
	for k, v := range c.m {
		switch {
		case under(v, a):
			c.m[k] = b + v[len(a):]
		case under(v, b):
			c.m[k] = a + v[len(b):]
		}
	}
}

// dropIf forgets the entries drop accepts.
func (c *pathCache) dropIf(drop func(key, path string) bool) {
	for k, v := range c.m {
		if drop(k, v) {
			delete(c.m, k)
		}
	}
}

// dropPrefix forgets dir and every cached path below it.
func (c *pathCache) dropPrefix(dir string) {
	c.dropIf(func(_, p string) bool { return under(p, dir) })
}
