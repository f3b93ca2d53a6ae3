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
	brokers, watched, work, bin, topic := agentSetup(t)
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

	health := func() int { return healthz(listen) }
	const files = 3000
	for i := range files {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("f-%04d.txt", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "/healthz unhealthy during the outage", func() bool { return health() == http.StatusServiceUnavailable })
	createTopic(t, brokers, topic, 1)
	waitFor(t, 90*time.Second, "/healthz healthy after the outage", func() bool { return health() == http.StatusOK })
	// Healthy means records move again, not that the spool is empty:
	// what SIGTERM finds there is the next run's (handed off), not this
	// run's to account for.
	waitFor(t, 90*time.Second, "the spool replayed", func() bool {
		m := scrape(listen)
		return m[`fanaudit_sink_received_total{sink="kafka"}`] >= files &&
			m[`fanaudit_sink_delivered_total{sink="kafka"}`]+m[`fanaudit_sink_dropped_total{sink="kafka"}`] == m[`fanaudit_sink_received_total{sink="kafka"}`] &&
			m[`fanaudit_kafka_spool_pending{sink="kafka"}`] == 0
	})
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

// healthz is the agent's /healthz status code, 0 when it does not answer.
func healthz(listen string) int {
	resp, err := http.Get("http://" + listen + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// scrape reads the agent's /metrics into name{labels} -> value.
func scrape(listen string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// accounting is what a consumer can check about one sink from the stream.
type accounting struct {
	lastSeqs  []uint64 // last event.sequence of each run, from the file sink
	lost      uint64   // fanaudit.lost.count naming kafka, every run, with or without previous_run_id
	delivered int      // distinct event ids that reached Kafka
}

func (a accounting) produced() uint64 {
	var n uint64
	for _, s := range a.lastSeqs {
		n += s
	}
	return n
}

// account reads the file sink (every run's records, appended) and Kafka.
func account(t *testing.T, outFile, brokers, topic string) accounting {
	t.Helper()
	var a accounting
	f, err := os.Open(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last uint64
	for sc.Scan() {
		var r lostRec
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("file sink line %q: %v", sc.Text(), err)
		}
		if r.Event.Sequence < last { // a new run starts over at 1
			a.lastSeqs = append(a.lastSeqs, last)
		}
		last = r.Event.Sequence
		if l := r.Fanaudit.Lost; r.Event.Action == "events_lost" && l.Sink == "kafka" {
			a.lost += l.Count
		}
	}
	a.lastSeqs = append(a.lastSeqs, last)
	out, err := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%h\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, h := range strings.Split(line, ",") {
			if id, ok := strings.CutPrefix(h, HeaderEventID+"="); ok {
				ids[id] = true
			}
		}
	}
	a.delivered = len(ids)
	return a
}

// TestAgentRestartDuringOutage stops the agent (SIGTERM) while its topic
// is missing: it must exit 0 promptly, handing its spooled records to the
// next run. The next run delivers them once the topic exists, and over
// both runs the records that reached Kafka plus the losses announced
// naming it equal the records produced.
func TestAgentRestartDuringOutage(t *testing.T) {
	brokers, watched, work, bin, topic := agentSetup(t)
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	outFile := filepath.Join(work, "out.jsonl")
	cfg := fmt.Sprintf(`paths = [%q]

[metrics]
enabled = true
listen = %q

[health]
sink_failing_after = "2s"

[[sinks]]
name = "file"
type = "file"

[sinks.file]
path = %q

[[sinks]]
name = "kafka"
type = "kafka"

[sinks.kafka]
brokers = [%q]
topic = %q
create_topics = false

[sinks.kafka.spool]
dir = %q
`, watched, listen, outFile, brokers, topic, filepath.Join(work, "spool"))
	health := func() int { return healthz(listen) }
	touch := func(prefix string, n int) {
		for i := range n {
			if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("%s-%04d.txt", prefix, i)), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	ag1 := startAgent(t, bin, work, cfg)
	touch("one", 1000)
	waitFor(t, 60*time.Second, "/healthz unhealthy during the outage", func() bool { return health() == http.StatusServiceUnavailable })
	start := time.Now()
	if err := ag1.stop(); err != nil {
		t.Fatalf("agent exit after SIGTERM during the outage: %v (%s)", err, lastLine(ag1.log.String()))
	}
	t.Logf("first run stopped in %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(ag1.log.String(), "records left in the spool for the next run") {
		t.Fatalf("the first run did not hand its spool on:\n%s", tail(ag1.log.String(), 20))
	}

	createTopic(t, brokers, topic, 1)
	ag2 := startAgent(t, bin, work, cfg)
	touch("two", 500)
	waitFor(t, 90*time.Second, "the second run's records and the spool delivered", func() bool {
		m := scrape(listen)
		return m[`fanaudit_sink_received_total{sink="kafka"}`] >= 2000 &&
			m[`fanaudit_sink_delivered_total{sink="kafka"}`] == m[`fanaudit_sink_received_total{sink="kafka"}`] &&
			m[`fanaudit_kafka_spool_pending{sink="kafka"}`] == 0
	})
	if h := health(); h != http.StatusOK {
		t.Errorf("/healthz %d after the spool drained", h)
	}
	if err := ag2.stop(); err != nil {
		t.Fatalf("second run exit after SIGTERM: %v (%s)", err, lastLine(ag2.log.String()))
	}
	var a accounting
	deadline := time.Now().Add(60 * time.Second)
	for {
		a = account(t, outFile, brokers, topic)
		if uint64(a.delivered)+a.lost >= a.produced() || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("runs' last sequences %v; kafka delivered %d, announced lost %d", a.lastSeqs, a.delivered, a.lost)
	if len(a.lastSeqs) != 2 {
		t.Fatalf("file sink holds %d runs, want 2", len(a.lastSeqs))
	}
	if uint64(a.delivered)+a.lost != a.produced() {
		t.Fatalf("kafka: %d delivered + %d announced lost != %d produced over both runs\nsecond run:\n%s", a.delivered, a.lost, a.produced(), tail(ag2.log.String(), 30))
	}
}
