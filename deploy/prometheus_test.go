package deploy_test

import (
	"os/exec"
	"regexp"
	"slices"
	"testing"
)

// TestAlertRules checks the shipped alert rules with promtool and runs
// their unit tests: each alert fires on its failure and not before.
func TestAlertRules(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "fanaudit.rules.yml"},
		{"test", "rules", "fanaudit.rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	// Rules use only documented metrics; TestLogrotateRunningAgent checks the
	// documented ones against a running agent's /metrics.
	documented, _ := documentedMetrics(t)
	for _, name := range regexp.MustCompile(`\bfanaudit_[a-z0-9_]*[a-z0-9]\b`).FindAllString(readFile(t, "prometheus/fanaudit.rules.yml"), -1) {
		if !slices.Contains(documented, name) {
			t.Errorf("fanaudit.rules.yml uses %s, which docs/operations.md does not document", name)
		}
	}
	// Every alert has a unit test.
	rules := readFile(t, "prometheus/fanaudit.rules.yml")
	tests := readFile(t, "prometheus/fanaudit.rules.test.yml")
	tested := regexp.MustCompile(`alertname: (\w+)`).FindAllStringSubmatch(tests, -1)
	var names []string
	for _, m := range tested {
		names = append(names, m[1])
	}
	for _, m := range regexp.MustCompile(`- alert: (\w+)`).FindAllStringSubmatch(rules, -1) {
		if !slices.Contains(names, m[1]) {
			t.Errorf("alert %s has no promtool test", m[1])
		}
	}
}
