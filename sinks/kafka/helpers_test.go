package kafka

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/rs/zerolog"
	kafkago "github.com/segmentio/kafka-go"
)

var testHost = &record.Host{Hostname: "h1", ID: "0123456789abcdef0123456789abcdef", BootID: "b00t"}

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ownBroker is a private broker instance a test may kill and restart.
type ownBroker struct {
	t     testing.TB
	dir   string
	addr  string
	extra []string
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startOwnBroker starts a broker on its own data directory via the script.
func startOwnBroker(t testing.TB, extra ...string) *ownBroker {
	t.Helper()
	testutil.KafkaBrokers(t) // same gate: no broker tooling, no test
	b := &ownBroker{t: t, dir: t.TempDir(), extra: extra}
	port := freePort(t)
	b.addr = "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"--port", strconv.Itoa(port), "--controller-port", strconv.Itoa(freePort(t))}, extra...)
	b.script("start", args...)
	t.Cleanup(func() { b.script("stop", "--keep") })
	return b
}

func (b *ownBroker) script(cmd string, args ...string) {
	b.t.Helper()
	full := append([]string{filepath.Join(repoRoot(b.t), "scripts", "kafka.sh"), cmd, "--dir", b.dir}, args...)
	out, err := exec.Command("bash", full...).CombinedOutput()
	if err != nil {
		b.t.Fatalf("kafka.sh %s: %v\n%s", cmd, err, out)
	}
}

func (b *ownBroker) kill()    { b.script("kill") }
func (b *ownBroker) restart() { b.script("start") }

func createTopic(t testing.TB, brokers, topic string, partitions int) {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers), Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	if err := res.Errors[topic]; err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

func uniqueTopic(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '-'
	}, strings.ToLower(t.Name()))
	return fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
}

// missingTopicCfg is a sink's config for a fresh topic that the sink may
// not create (so it spools, to a fresh directory, until the test creates
// the topic).
func missingTopicCfg(t testing.TB, brokers string) (topic string, cfg Config) {
	topic = uniqueTopic(t)
	cfg = testConfig(brokers, topic)
	cfg.CreateTopics = false
	cfg.Spool.Dir = t.TempDir()
	return topic, cfg
}

// consumeIDs reads the topic with kcat, the independent consumer, until
// want distinct event ids arrived or the deadline passes, and returns how
// often each id arrived.
func consumeIDs(t testing.TB, brokers, topic string, want int, within time.Duration, kcatArgs ...string) map[string]int {
	t.Helper()
	deadline := time.Now().Add(within)
	var seen map[string]int
	for {
		args := append([]string{"-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%h\n"}, kcatArgs...)
		out, err := exec.Command("kcat", args...).Output()
		seen = map[string]int{}
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(out))
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				for _, h := range strings.Split(sc.Text(), ",") {
					if id, ok := strings.CutPrefix(h, HeaderEventID+"="); ok {
						seen[id]++
					}
				}
			}
		}
		if len(seen) >= want || time.Now().After(deadline) {
			if err != nil {
				t.Logf("kcat: %v", err)
			}
			return seen
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// delivery summarises a consumed topic against the ids sent.
type delivery struct{ sent, delivered, duplicates, missing int }

func check(ids []string, seen map[string]int) delivery {
	d := delivery{sent: len(ids)}
	for _, id := range ids {
		n := seen[id]
		if n == 0 {
			d.missing++
			continue
		}
		d.delivered++
		d.duplicates += n - 1
	}
	return d
}

func testLine(seq uint64) []byte {
	return fmt.Appendf(nil, `{"@timestamp":"2026-11-22T01:00:00.000000000Z","event":{"action":"modify","sequence":%d,"category":["file"],"type":["change"]},"file":{"path":"/srv/data/file-%d.txt","type":"file","inode":%d,"size":4096},"process":{"pid":4242,"name":"writer","executable":"/usr/bin/writer"},"user":{"id":"0","name":"root"},"host":{"hostname":"h1","id":"0123456789abcdef0123456789abcdef"}}`+"\n", seq, seq%100, seq)
}

func testItem(seq uint64) *sinks.Item {
	return &sinks.Item{Seq: seq, Action: record.ActionModify, Path: fmt.Sprintf("/srv/data/file-%d.txt", seq%100), Line: testLine(seq)}
}

func eventID(runID string, seq uint64) string {
	return fmt.Sprintf("%s:%s:%s:%d", testHost.ID, testHost.BootID, runID, seq)
}

func testConfig(brokers, topic string) Config {
	c := Defaults()
	c.Brokers = strings.Split(brokers, ",")
	c.Topic = topic
	c.WriteTimeout = Duration{5 * time.Second}
	return c
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// running is a sink under test with its queue.
type running struct {
	sink  *Sink
	runID string
	q     *queue.Queue
	done  chan error
	stop  context.CancelFunc
}

func startSink(t testing.TB, cfg Config, runID string) *running {
	t.Helper()
	s, err := New(cfg, testHost, runID, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return startExisting(t, s, runID)
}

func startExisting(t testing.TB, s *Sink, runID string) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sink: s, runID: runID, q: queue.New("kafka", 4096, sinks.Block), done: make(chan error, 1), stop: cancel}
	go func() { r.done <- s.Run(ctx, r.q) }()
	t.Cleanup(func() {
		cancel()
		r.q.Close()
		<-r.done
	})
	return r
}

func (r *running) push(t testing.TB, from, n uint64) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for seq := from; seq < from+n; seq++ {
		if err := r.q.Push(context.Background(), testItem(seq)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, eventID(r.runID, seq))
	}
	return ids
}

// closeAndWait closes the queue and waits for Run to return.
func (r *running) closeAndWait(t testing.TB, within time.Duration) error {
	t.Helper()
	r.q.Close()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s after the queue closed", within)
		return nil
	}
}

// settledQueue checks the invariant and that nothing is left in flight.
func settledQueue(t testing.TB, q *queue.Queue) queue.Stats {
	t.Helper()
	st := q.Stats()
	if st.Received != st.Delivered+st.Dropped+st.InFlight {
		t.Errorf("queue invariant broken: %+v", st)
	}
	return st
}
