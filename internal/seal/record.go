package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Record is the content of a seal record's fanaudit.seal object. The line
// is
//
//	{"@timestamp":"…","event":{"kind":"state","action":"seal","dataset":"fanaudit.seal"},
//	 "fanaudit":{"seal":{"version":1,"key_id":"…","epoch":7,"kind":"interval",
//	  "lines":1200,"blocks":75,"first_sequence":10001,"last_sequence":11200,
//	  "prev":"<hex>","head":"<hex>","mark_every":1,"marks":"<base64>","mac":"<hex>"}}}
//
// on one line; first_sequence and last_sequence are left out when the
// seal covers no lines. The MAC covers every byte before its value.
type Record struct {
	Version   int    `json:"version"`
	KeyID     string `json:"key_id"`
	Epoch     uint64 `json:"epoch"`
	Kind      string `json:"kind"`
	Lines     uint64 `json:"lines"`
	Blocks    uint64 `json:"blocks"`
	FirstSeq  uint64 `json:"first_sequence,omitempty"`
	LastSeq   uint64 `json:"last_sequence,omitempty"`
	Prev      string `json:"prev"`
	Head      string `json:"head"`
	MarkEvery uint64 `json:"mark_every"`
	Marks     string `json:"marks"`
	MAC       string `json:"mac"`

	Time time.Time `json:"-"`
}

const (
	sealPrefix = `{"@timestamp":"`
	sealEvent  = `","event":{"kind":"state","action":"seal","dataset":"fanaudit.seal"},"fanaudit":{"seal":{`
	macField   = `"mac":"`
	sealSuffix = `"}}}`
)

// appendLine appends the seal line for r, MACed under epoch key k, without
// a trailing newline.
func appendLine(dst []byte, r *Record, k *Key) []byte {
	start := len(dst)
	dst = append(dst, sealPrefix...)
	dst = r.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, sealEvent...)
	dst = append(dst, `"version":`...)
	dst = strconv.AppendInt(dst, int64(r.Version), 10)
	dst = appendStr(dst, "key_id", r.KeyID)
	dst = appendUint(dst, "epoch", r.Epoch)
	dst = appendStr(dst, "kind", r.Kind)
	dst = appendUint(dst, "lines", r.Lines)
	dst = appendUint(dst, "blocks", r.Blocks)
	if r.Lines > 0 {
		dst = appendUint(dst, "first_sequence", r.FirstSeq)
		dst = appendUint(dst, "last_sequence", r.LastSeq)
	}
	dst = appendStr(dst, "prev", r.Prev)
	dst = appendStr(dst, "head", r.Head)
	dst = appendUint(dst, "mark_every", r.MarkEvery)
	dst = appendStr(dst, "marks", r.Marks)
	dst = append(dst, ',')
	dst = append(dst, macField...)
	mac := sealMAC(k, dst[start:])
	dst = hex.AppendEncode(dst, mac[:])
	return append(dst, sealSuffix...)
}

// appendStr appends ,"name":"v"; v is hex, base64 or a fixed word, which
// need no JSON escaping.
func appendStr(dst []byte, name, v string) []byte {
	dst = append(dst, `,"`...)
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	dst = append(dst, v...)
	return append(dst, '"')
}

func appendUint(dst []byte, name string, v uint64) []byte {
	dst = append(dst, `,"`...)
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	return strconv.AppendUint(dst, v, 10)
}

// sealMember is how a seal record's body starts. A record line can hold
// it only as JSON structure (a string would escape its quotes), and event
// records have no fanaudit.seal, so a line that holds it is a seal record
// or an altered or forged one.
const sealMember = `"fanaudit":{"seal":{`

// IsSeal reports whether line claims to be a seal record (it may be
// altered or forged: ParseRecord and the MAC decide).
func IsSeal(line []byte) bool {
	return bytes.Contains(line, []byte(sealMember)) || bytes.Contains(line, []byte(`"dataset":"fanaudit.seal"`))
}

// ParseRecord parses a seal line (without its newline).
func ParseRecord(line []byte) (*Record, error) {
	if !bytes.HasSuffix(line, []byte(sealSuffix)) {
		return nil, errors.New("seal record does not end with its MAC")
	}
	var v struct {
		Timestamp time.Time `json:"@timestamp"`
		Fanaudit  struct {
			Seal *Record `json:"seal"`
		} `json:"fanaudit"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return nil, fmt.Errorf("seal record: %w", err)
	}
	r := v.Fanaudit.Seal
	if r == nil {
		return nil, errors.New("seal record without fanaudit.seal")
	}
	r.Time = v.Timestamp
	return r, nil
}

// checkMAC verifies the MAC of line under epoch key k.
func checkMAC(line []byte, k *Key) bool {
	i := bytes.LastIndex(line, []byte(macField))
	if i < 0 {
		return false
	}
	end := i + len(macField)
	got, err := hex.DecodeString(string(line[end : len(line)-len(sealSuffix)]))
	if err != nil {
		return false
	}
	want := sealMAC(k, line[:end])
	return len(got) == len(want) && hmacEqual(got, want[:])
}

func hmacEqual(a, b []byte) bool {
	var d byte
	for i := range a {
		d |= a[i] ^ b[i]
	}
	return d == 0
}

func encodeMarks(m []byte) string { return base64.StdEncoding.EncodeToString(m) }

func decodeMarks(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%markSize != 0 {
		return nil, errors.New("bad marks")
	}
	return b, nil
}
