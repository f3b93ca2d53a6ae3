package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ReadTopic reads the whole of cfg.Topic as it stands when called: for
// every partition, each record from the earliest offset the broker still
// keeps up to the end offset it reported at the start, in offset order,
// handed to fn with its partition and offset (value is valid only during
// the call). It connects with the sink's own settings (brokers, TLS,
// SASL, client id), so whatever can write a sealed topic can read it
// back; this is what `fanaudit verify` uses instead of a kcat dump.
// Records written after the call began are not read.
func ReadTopic(ctx context.Context, cfg Config, fn func(partition int, offset int64, value []byte) error) error {
	if len(cfg.Brokers) == 0 || cfg.Topic == "" {
		return errors.New("kafka: brokers and topic are needed to read a topic")
	}
	tr, err := cfg.transport()
	if err != nil {
		return err
	}
	tr.DialTimeout = 10 * time.Second
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: tr}
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{cfg.Topic}})
	if err != nil {
		return fmt.Errorf("kafka: metadata of topic %s: %w", cfg.Topic, err)
	}
	if len(md.Topics) != 1 {
		return fmt.Errorf("kafka: topic %s: no metadata", cfg.Topic)
	}
	if err := md.Topics[0].Error; err != nil {
		return fmt.Errorf("kafka: topic %s: %w", cfg.Topic, err)
	}
	parts := make([]int, 0, len(md.Topics[0].Partitions))
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	sort.Ints(parts)
	reqs := make([]kafkago.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	offs, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{cfg.Topic: reqs}})
	if err != nil {
		return fmt.Errorf("kafka: offsets of topic %s: %w", cfg.Topic, err)
	}
	for _, po := range offs.Topics[cfg.Topic] {
		if po.Error != nil {
			return fmt.Errorf("kafka: offsets of %s[%d]: %w", cfg.Topic, po.Partition, po.Error)
		}
	}
	byPart := map[int]kafkago.PartitionOffsets{}
	for _, po := range offs.Topics[cfg.Topic] {
		byPart[po.Partition] = po
	}
	for _, p := range parts {
		po, ok := byPart[p]
		if !ok {
			return fmt.Errorf("kafka: offsets of %s[%d]: not returned", cfg.Topic, p)
		}
		if err := readPartition(ctx, c, cfg.Topic, p, po.FirstOffset, po.LastOffset, fn); err != nil {
			return err
		}
	}
	return nil
}

// readPartition fetches one partition's records in [from, end).
func readPartition(ctx context.Context, c *kafkago.Client, topic string, p int, from, end int64, fn func(int, int64, []byte) error) error {
	for off := from; off < end; {
		res, err := c.Fetch(ctx, &kafkago.FetchRequest{Topic: topic, Partition: p, Offset: off, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: time.Second})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return fmt.Errorf("kafka: fetch %s[%d] at offset %d: %w", topic, p, off, err)
		}
		next, err := readRecords(res.Records, off, end, func(o int64, v []byte) error { return fn(p, o, v) })
		if err != nil {
			return fmt.Errorf("kafka: read %s[%d] at offset %d: %w", topic, p, off, err)
		}
		if next == off {
			// A fetch that moves nothing would loop forever: the records
			// below the end offset must be there (an aborted transaction's
			// gap is the one exception, and fanaudit writes none).
			return fmt.Errorf("kafka: read %s[%d]: no record at offset %d below the end offset %d", topic, p, off, end)
		}
		off = next
	}
	return nil
}

// readRecords hands fn the records in rr from offset from (a batch may
// start earlier) and below end, and returns the offset after the last one
// read.
func readRecords(rr kafkago.RecordReader, from, end int64, fn func(int64, []byte) error) (int64, error) {
	if rr == nil {
		return from, nil
	}
	defer closeRecords(rr)
	next := from
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return next, nil
		}
		if err != nil {
			return next, err
		}
		if r.Offset < next || r.Offset >= end {
			continue
		}
		var v []byte
		if r.Value != nil {
			if v, err = io.ReadAll(r.Value); err != nil {
				return next, err
			}
		}
		if err := fn(r.Offset, v); err != nil {
			return next, err
		}
		next = r.Offset + 1
	}
}

func closeRecords(rr kafkago.RecordReader) {
	if c, ok := rr.(io.Closer); ok {
		c.Close()
	}
}
