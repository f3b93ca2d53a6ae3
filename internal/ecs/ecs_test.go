package ecs

import (
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	tab, err := Table()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"@timestamp": "date", "process.pid": "long", "file.inode": "keyword", "process.args": "keyword"} {
		if f := tab[name]; f == nil || f.Type != want {
			t.Errorf("%s: %+v, want type %s", name, f, want)
		}
	}
	if !tab["process.args"].Array || tab["process.pid"].Array {
		t.Error("array flags wrong")
	}
	if exp := tab["event.category"].Expected["file"]; !contains(exp, "creation") {
		t.Errorf("expected types of file: %v", exp)
	}
}

// TestCheckFinds: each kind of deviation is found, and a conforming
// record has none.
func TestCheckFinds(t *testing.T) {
	tab, err := Table()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, rec, want string }{
		{"ok", `{"@timestamp":"2026-01-01T00:00:00.000000001Z","event":{"kind":"event","category":["file"],"type":["creation"]},"file":{"path":"/a","Ext":{"original":{"path":"/b"}}},"process":{"pid":1,"args":["a",""]},"user":{"audit":{"id":"1"}},"host":{"os":{"type":"linux"}},"fanaudit":{"x":{"y":1}}}`, ""},
		{"unknown field", `{"process":{"cgroup":{"path":"/x"}}}`, "process.cgroup.path: not an ECS field"},
		{"wrong type", `{"process":{"pid":"1"}}`, "want an integer"},
		{"keyword as number", `{"file":{"inode":5}}`, "want a string"},
		{"not an array", `{"process":{"args":"a b"}}`, "normalizes it to an array"},
		{"array", `{"file":{"path":["/a"]}}`, "an array"},
		{"kind", `{"event":{"kind":"loss"}}`, "not an allowed value"},
		{"os", `{"host":{"os":{"type":"Linux"}}}`, "not an allowed value"},
		{"file type", `{"file":{"type":"fifo"}}`, "not an allowed value"},
		{"expected type", `{"event":{"category":["file"],"type":["start"]}}`, "not expected with event.category file"},
		{"date", `{"@timestamp":"yesterday"}`, "date"},
	}
	for _, tc := range tests {
		m, err := Decode([]byte(tc.rec))
		if err != nil {
			t.Fatal(err)
		}
		devs := strings.Join(Check(tab, m), "\n")
		if tc.want == "" && devs != "" || tc.want != "" && !strings.Contains(devs, tc.want) {
			t.Errorf("%s: deviations %q, want %q", tc.name, devs, tc.want)
		}
	}
}
