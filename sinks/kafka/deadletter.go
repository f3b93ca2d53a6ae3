package kafka

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// deadLetters appends permanently rejected messages to a JSONL file, one
// object per message, so an operator can inspect and re-send them. The
// file goes through internal/safefile: never through a symbolic link,
// only in a directory no other user can write, and reopened when it was
// deleted or replaced under the sink.
type deadLetters struct {
	path  string
	topic string
	mu    sync.Mutex
	f     *safefile.File
}

type deadLetter struct {
	Time    time.Time       `json:"time"`
	Topic   string          `json:"topic"`
	EventID string          `json:"event_id"`
	Key     string          `json:"key,omitempty"`
	Error   string          `json:"error"`
	Record  json.RawMessage `json:"record,omitempty"`
	Value   string          `json:"value,omitempty"` // when the value is not JSON
}

func openDeadLetters(path, topic string) (*deadLetters, error) {
	d := &deadLetters{path: path, topic: topic}
	if err := d.reopen(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *deadLetters) open() (*safefile.File, error) {
	f, err := safefile.Open(d.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600,
		safefile.Options{Key: "dead_letter_file", Create: true})
	if err != nil && !errors.Is(err, safefile.ErrUnsafe) { // a refusal names the key already
		err = fmt.Errorf("dead_letter_file: %w", err)
	}
	return f, err
}

func (d *deadLetters) reopen() error {
	f, err := d.open()
	if err != nil {
		return err
	}
	d.mu.Lock()
	old := d.f
	d.f = f
	d.mu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil {
			return fmt.Errorf("dead_letter_file: close old file: %w", err)
		}
	}
	return nil
}

func (d *deadLetters) write(id string, key, value []byte, cause error) error {
	dl := deadLetter{Time: time.Now().UTC(), Topic: d.topic, EventID: id, Key: string(key), Error: cause.Error()}
	if json.Valid(value) {
		dl.Record = value
	} else {
		dl.Value = string(value)
	}
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("dead letter encode: %w", err)
	}
	b = append(b, '\n')
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return fmt.Errorf("dead letter write %s: file closed", d.path)
	}
	// Dead letters are rare: check every time that the path still leads
	// to the open file, so that none goes into a deleted one.
	if change, err := d.f.Compare(); err == nil && (change == safefile.Unlinked || change == safefile.Replaced) {
		f, err := d.open()
		switch {
		case err == nil:
			_ = d.f.Close()
			d.f = f
		case change == safefile.Unlinked:
			return fmt.Errorf("dead letter write: the file was deleted and cannot be created again: %w", err)
		}
		// Replaced by something that cannot be opened (a planted link):
		// the old file still has a name; write on to it.
	}
	if _, err := d.f.Write(b); err != nil {
		return fmt.Errorf("dead letter write %s: %w", d.path, err)
	}
	return nil
}

func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	f := d.f
	d.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("dead_letter_file: %w", err)
	}
	return nil
}
