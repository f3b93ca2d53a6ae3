package audit

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

func (c *pathCache) put(key []byte, path string) {
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
// is fine.
func (c *pathCache) movePrefix(oldDir, newDir string) {
	for k, v := range c.m {
		if under(v, oldDir) {
			c.m[k] = newDir + v[len(oldDir):]
		}
	}
}

// swapPrefix trades the cached paths of a and b and of everything below
// them: renameat2 RENAME_EXCHANGE of two directories.
func (c *pathCache) swapPrefix(a, b string) {
	for k, v := range c.m {
		switch {
		case under(v, a):
			c.m[k] = b + v[len(a):]
		case under(v, b):
			c.m[k] = a + v[len(b):]
		}
	}
}

// dropPrefix forgets dir and every cached path below it.
func (c *pathCache) dropPrefix(dir string) {
	for k, v := range c.m {
		if under(v, dir) {
			delete(c.m, k)
		}
	}
}
