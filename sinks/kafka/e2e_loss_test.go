package kafka

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// lostRec is the part of a record the accounting checks read.
type lostRec struct {
	Event struct {
		Action   string `json:"action"`
		Sequence uint64 `json:"sequence"`
	} `json:"event"`
	Fanaudit struct {
		Lost struct {
			Count         uint64 `json:"count"`
			Reason        string `json:"reason"`
			Sink          string `json:"sink"`
			PreviousRunID string `json:"previous_run_id"`
		} `json:"lost"`
	} `json:"fanaudit"`
}

// TestAgentOutageAccounted runs the agent with a Kafka sink whose topic
// does not exist and may not be created (an outage), a small spool under
// drop_oldest, and a file sink beside it. During the outage /healthz turns
// unhealthy; once the topic exists it recovers. After SIGTERM: the Kafka
// consumer's records plus the loss counts naming the kafka sink, announced
// in-band (in the file and in Kafka itself), account for every sequence
// number, exactly.
func TestAgentOutageAccounted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the agent")
	}
	brokers := sharedBrokers(t)
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "32m")
	work := t.TempDir()
	bin := buildAgent(t, work)
	topic := uniqueTopic(t)
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	outFile := filepath.Join(work, "out.jsonl")
	ag := startAgent(t, bin, work, fmt.Sprintf(`paths = [%q]

[metrics]
enabled = true
listen = %q

[health]
sink_failing_after = "2s"

[[sinks]]
name = "file"
type = "file"
when_full = "block"

[sinks.file]
path = %q

[[sinks]]
name = "kafka"
type = "kafka"
when_full = "block"

[sinks.kafka]
brokers = [%q]
topic = %q
create_topics = false
batch_size = 200
max_message_bytes = 8192
batch_bytes = 65536
when_full = "drop_oldest"

[sinks.kafka.spool]
dir = %q
segment_bytes = 65536
max_bytes = 262144
`, watched, listen, outFile, brokers, topic, filepath.Join(work, "spool")))

	health := func() int {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const files = 3000
	for i := range files {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("f-%04d.txt", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "/healthz unhealthy during the outage", func() bool { return health() == http.StatusServiceUnavailable })
	createTopic(t, brokers, topic, 1)
	waitFor(t, 90*time.Second, "/healthz healthy after the outage", func() bool { return health() == http.StatusOK })
	if err := ag.stop(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v (%s)", err, lastLine(ag.log.String()))
	}

	// The file sink holds every record: the last sequence and the loss
	// records naming kafka.
	f, err := os.Open(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last, lostKafka uint64
	reasons := map[string]uint64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r lostRec
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("file sink line %q: %v", sc.Text(), err)
		}
		last = max(last, r.Event.Sequence)
		if l := r.Fanaudit.Lost; r.Event.Action == "events_lost" && l.Sink == "kafka" && l.PreviousRunID == "" {
			lostKafka += l.Count
			reasons[l.Reason] += l.Count
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	delivered := map[uint64]bool{}
	lossInKafka := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r lostRec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("kafka value %q: %v", line, err)
		}
		delivered[r.Event.Sequence] = true
		if r.Event.Action == "events_lost" && r.Fanaudit.Lost.Sink == "kafka" {
			lossInKafka++
		}
	}
	t.Logf("last sequence %d; kafka delivered %d distinct, lost %d %v; %d kafka loss records in kafka", last, len(delivered), lostKafka, reasons, lossInKafka)
	if reasons["spool_full"] == 0 {
		t.Fatalf("the spool dropped nothing; the test did not exercise drop_oldest\n%s", tail(ag.log.String(), 30))
	}
	if uint64(len(delivered))+lostKafka != last {
		t.Fatalf("kafka: %d delivered + %d announced lost != last sequence %d\n%s", len(delivered), lostKafka, last, tail(ag.log.String(), 30))
	}
	if lossInKafka == 0 {
		t.Error("no loss record naming kafka reached kafka")
	}
}
