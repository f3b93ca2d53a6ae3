package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/ecs"
)

// TestIndexTemplate checks the Elasticsearch/OpenSearch index template
// against the record schema and the ECS field table: every field of
// docs/fanaudit.schema.json is mapped and nothing else is; ECS fields have
// their ECS type, except that dates are date_nanos so the nanoseconds of
// @timestamp survive; fanaudit.* and the extensions are keyword or long
// as their JSON type says.
func TestIndexTemplate(t *testing.T) {
	root := repoRoot(t)
	var tmpl struct {
		IndexPatterns []string `json:"index_patterns"`
		Template      struct {
			Mappings struct {
				Properties map[string]any `json:"properties"`
			} `json:"mappings"`
		} `json:"template"`
	}
	readJSON(t, filepath.Join(root, "deploy", "elasticsearch", "fanaudit-template.json"), &tmpl)
	if len(tmpl.IndexPatterns) == 0 {
		t.Error("no index_patterns")
	}
	mapped := map[string]string{}
	flattenMapping("", tmpl.Template.Mappings.Properties, mapped)

	var schema map[string]any
	readJSON(t, filepath.Join(root, "docs", "fanaudit.schema.json"), &schema)
	fields := map[string]string{} // name -> JSON schema type
	flattenSchema("", schema, fields)

	tab, err := ecs.Table()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		got, ok := mapped[n]
		if !ok {
			t.Errorf("%s: not mapped", n)
			continue
		}
		var want string
		f := tab[n]
		switch {
		case strings.HasPrefix(n, "fanaudit.") || contains(ecs.Extensions, n):
			want = "keyword"
			if fields[n] == "integer" {
				want = "long"
			}
		case f == nil:
			t.Errorf("%s: in the record schema but not an ECS field", n)
			continue
		case f.Type == "date":
			want = "date_nanos"
		default:
			want = f.Type
		}
		if got != want {
			t.Errorf("%s: mapped as %s, want %s", n, got, want)
		}
	}
	for n := range mapped {
		if _, ok := fields[n]; !ok {
			t.Errorf("%s: mapped but not in the record schema", n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// flattenMapping maps each leaf of an index mapping to its type.
func flattenMapping(prefix string, props map[string]any, out map[string]string) {
	for k, v := range props {
		m, _ := v.(map[string]any)
		if sub, ok := m["properties"].(map[string]any); ok {
			flattenMapping(prefix+k+".", sub, out)
			continue
		}
		typ, _ := m["type"].(string)
		out[prefix+k] = typ
	}
}

// flattenSchema maps each leaf of the record JSON Schema to its JSON type
// (an array's item type).
func flattenSchema(prefix string, s map[string]any, out map[string]string) {
	props, _ := s["properties"].(map[string]any)
	for k, v := range props {
		m, _ := v.(map[string]any)
		switch m["type"] {
		case "object":
			flattenSchema(prefix+k+".", m, out)
		case "array":
			items, _ := m["items"].(map[string]any)
			out[prefix+k], _ = items["type"].(string)
		default:
			out[prefix+k], _ = m["type"].(string)
		}
	}
}
