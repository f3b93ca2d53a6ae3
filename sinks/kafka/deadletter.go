package kafka

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// deadLetters appends permanently rejected messages to a JSONL file, one
// object per message, so an operator can inspect and re-send them.
type deadLetters struct {
	path  string
	topic string
	mu    sync.Mutex
	f     *os.File
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

func (d *deadLetters) reopen() error {
	f, err := os.OpenFile(d.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dead_letter_file: %w", err)
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
