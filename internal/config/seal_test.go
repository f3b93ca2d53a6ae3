package config

import (
	"strings"
	"testing"
	"time"
)

// The sealing keys: defaults, and errors that name the key and its line.
func TestSealKeys(t *testing.T) {
	base := `paths = ["/srv"]
[[sinks]]
name = "a"
type = "file"
%s
[sinks.file]
path = "/var/log/a.json"
`
	c, err := Parse("t.toml", []byte(strings.Replace(base, "%s", `seal_state = "/var/lib/fanaudit/a.seal"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Sinks[0]; s.SealState != "/var/lib/fanaudit/a.seal" || s.SealInterval != 10*time.Second {
		t.Fatalf("seal keys %q %v", s.SealState, s.SealInterval)
	}
	found := false
	for _, p := range c.OutputPaths() {
		found = found || p == "/var/lib/fanaudit/a.seal"
	}
	if !found {
		t.Errorf("the seal state is not among the output paths the capture ignores: %v", c.OutputPaths())
	}
	for _, tc := range []struct{ keys, want string }{
		{`seal_state = "rel.seal"`, "t.toml:5: key sinks[0].seal_state: \"rel.seal\" is not an absolute path"},
		{"seal_state = \"/s\"\nseal_interval = \"10ms\"", "t.toml:6: key sinks[0].seal_interval: must be at least 1s"},
	} {
		_, err := Parse("t.toml", []byte(strings.Replace(base, "%s", tc.keys, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.keys, err, tc.want)
		}
	}
	two := strings.Replace(base, "%s", `seal_state = "/s"`, 1) + `[[sinks]]
name = "b"
type = "stdout"
seal_state = "/s"
`
	if _, err := Parse("t.toml", []byte(two)); err == nil || !strings.Contains(err.Error(), `t.toml:11: key sinks[1].seal_state: sink "a" uses the same seal state`) {
		t.Errorf("two sinks on one state: %v", err)
	}
}
