package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestSealedKafkaTopic: a sealed Kafka sink, through an agent restart, on
// a topic of three partitions (records keyed by path, so they spread and
// interleave); the topic read back with kcat verifies with --kafka, and a
// record removed from the dump is found.
func TestSealedKafkaTopic(t *testing.T) {
	testutil.RequireRoot(t)
	brokers := testutil.KafkaBrokers(t)
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatal("kcat is needed (apt package kcat; .ci/run installs it)")
	}
	topic := fmt.Sprintf("seal-e2e-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafkago.Client{Addr: kafkago.TCP(strings.Split(brokers, ",")...)}
	res, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors[topic]; err != nil {
		t.Fatal(err)
	}

	watched := testutil.TmpfsMount(t, "16m")
	state := filepath.Join(t.TempDir(), "seal.state")
	key := keygen(t, state)
	cfg := runConfig(t, fmt.Sprintf(`paths = [%q]
events = ["create", "close_write", "delete"]
shutdown_timeout = "20s"
stats_interval = "0s"
[logging]
format = "json"

[[sinks]]
name = "siem"
type = "kafka"
seal_state = %q
seal_interval = "1s"
[sinks.kafka]
brokers = [%q]
topic = %q
key = "path"
create_topics = false
[sinks.kafka.spool]
dir = %q
`, watched, state, brokers, topic, filepath.Join(t.TempDir(), "spool")))

	for _, prefix := range []string{"a", "b"} {
		a := start(t, false, "run", "--config", cfg)
		a.waitLog("running", startTimeout)
		makeFiles(t, watched, prefix, 200)
		a.stop()
	}

	// The topic holds at least both runs' records: 2 open seals, 2 closing
	// seals and 1200 records.
	dump := filepath.Join(t.TempDir(), "topic.json")
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q").Output()
		if err != nil {
			t.Fatalf("kcat: %v", err)
		}
		if err := os.WriteFile(dump, out, 0o600); err != nil {
			t.Fatal(err)
		}
		n := strings.Count(string(out), "\n")
		if n >= 1204 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic has %d messages, want at least 1204", n)
		}
		time.Sleep(200 * time.Millisecond) // polling an external consumer; nothing to wait on
	}
	if code, errs := verifyRun(t, "--kafka", "--key", key, dump); code != 0 {
		t.Fatalf("verify --kafka of the topic: exit %d: %q", code, errs)
	}

	// The topic read directly, with the sink's own settings from the
	// config and with --brokers/--topic, verifies the same.
	if code, errs := verifyRun(t, "--key", key, "--config", cfg, "--sink", "siem"); code != 0 {
		t.Fatalf("verify --config --sink (the topic read directly): exit %d: %q", code, errs)
	}
	if code, errs := verifyRun(t, "--key", key, "--brokers", brokers, "--topic", topic); code != 0 {
		t.Fatalf("verify --brokers --topic: exit %d: %q", code, errs)
	}

	// Drop one record from the dump: verify names the loss.
	b := readFile(t, dump)
	lines := strings.SplitAfter(string(b), "\n")
	for i, l := range lines {
		if !isSealLine(l) && strings.Contains(l, `"action":"close_write"`) {
			lines = append(lines[:i], lines[i+1:]...)
			break
		}
	}
	if err := os.WriteFile(dump, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, errs := verifyRun(t, "--kafka", "--key", key, dump)
	if code != 1 || len(errs) == 0 || !strings.Contains(errs[0], "removed") {
		t.Fatalf("verify --kafka of a dump without one record: exit %d: %q", code, errs)
	}

	// A forged record produced into the topic (a sealed record with one
	// byte changed) is found when the topic is read directly, and named
	// by partition and offset.
	var forged []byte
	for _, l := range lines {
		if !isSealLine(l) && strings.Contains(l, `"action":"create"`) {
			forged = []byte(strings.Replace(strings.TrimSuffix(l, "\n"), `"action":"create"`, `"action":"creatE"`, 1))
			break
		}
	}
	w := &kafkago.Writer{Addr: kafkago.TCP(strings.Split(brokers, ",")...), Topic: topic, RequiredAcks: kafkago.RequireAll}
	if err := w.WriteMessages(ctx, kafkago.Message{Partition: 0, Value: forged}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	code, errs = verifyRun(t, "--key", key, "--brokers", brokers, "--topic", topic)
	if code != 1 || len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), topic+"[") {
		t.Fatalf("verify --topic after a forged record was produced: exit %d: %q", code, errs)
	}
}
