// Package runstate owns the agent's run marker in state_dir: a small file
// that exists exactly while a run is under way, naming its run id and the
// last event.sequence known to be settled. A clean stop removes it, so a
// run that finds one knows that the previous run ended uncleanly (SIGKILL,
// a crash, power loss) and can say so in-band (an events_lost record with
// reason agent_restart). Every write goes through internal/safefile: the
// state directory must be private, the marker is replaced atomically.
package runstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// markerName is the marker's file name in the state directory; lockName
// is a file a live run holds an exclusive flock on, so that a second agent
// on the same state_dir neither mistakes the first for a crashed run nor
// touches its marker.
const (
	markerName = "run.json"
	lockName   = "run.lock"
)

// ErrBusy is returned by Begin when a live agent holds the state directory.
var ErrBusy = errors.New("another running agent uses this state directory")

// maxMarker bounds what is read of a marker: it is a few dozen bytes.
const maxMarker = 64 << 10

// Previous describes a run that ended without a clean stop.
type Previous struct {
	// RunID is "" when the marker could not be read (it was damaged).
	RunID string
	// LastSequence is its last settled event.sequence, when HasLastSequence.
	LastSequence    uint64
	HasLastSequence bool
}

// Marker is this run's marker. Its methods are safe for concurrent use.
type Marker struct {
	mu      sync.Mutex
	dir     *safefile.Dir
	lock    *os.File // holds the flock for the run
	state   state
	cleaned bool
}

// state is the marker's content.
type state struct {
	RunID        string    `json:"run_id"`
	Started      time.Time `json:"started"`
	LastSequence *uint64   `json:"last_sequence,omitempty"`
}

// Begin opens (creating it 0700 when missing) the private state directory
// dir, reads what a previous run left there and writes this run's marker.
// prev is nil when the previous run stopped cleanly (or there was none).
// key names dir in errors (the config key, "state_dir").
func Begin(dir, key, runID string, now time.Time) (m *Marker, prev *Previous, err error) {
	d, err := safefile.OpenDir(dir, safefile.Options{Key: key, Create: true, Private: true})
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	lock, err := d.Lock(lockName, 0o600)
	if errors.Is(err, safefile.ErrLocked) {
		return nil, nil, fmt.Errorf("%s %s: %w", key, dir, ErrBusy)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: run lock: %w", key, err)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	b, err := d.ReadFile(markerName, maxMarker)
	switch {
	case err == nil:
		var st state
		prev = &Previous{}
		if json.Unmarshal(b, &st) == nil {
			prev.RunID = st.RunID
			if st.LastSequence != nil {
				prev.LastSequence, prev.HasLastSequence = *st.LastSequence, true
			}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, nil, fmt.Errorf("%s: run marker: %w", key, err)
	}
	m = &Marker{dir: d, lock: lock, state: state{RunID: runID, Started: now.UTC()}}
	if err := m.write(); err != nil {
		return nil, nil, fmt.Errorf("%s: run marker: %w", key, err)
	}
	return m, prev, nil
}

// write replaces the marker with m.state. Called with mu held (or before
// m is shared).
func (m *Marker) write() error {
	b, err := json.Marshal(m.state)
	if err != nil {
		return err
	}
	return m.dir.WriteFile(markerName, append(b, '\n'), 0o600)
}

// Update records seq as the last settled event.sequence. A failure is
// returned for the caller to log; the marker keeps its older content.
func (m *Marker) Update(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cleaned || (m.state.LastSequence != nil && *m.state.LastSequence == seq) {
		return nil
	}
	m.state.LastSequence = &seq
	return m.write()
}

// Clean marks a clean stop: the marker is removed, so the next run starts
// without an agent_restart record. Later Updates do nothing.
func (m *Marker) Clean() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cleaned {
		return nil
	}
	m.cleaned = true
	if err := m.dir.Remove(markerName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("run marker: %w", err)
	}
	return m.dir.Sync()
}

// Close releases the state directory and the lock; the marker stays
// unless Clean ran.
func (m *Marker) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return errors.Join(m.lock.Close(), m.dir.Close())
}
