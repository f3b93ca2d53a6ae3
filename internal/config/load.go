package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// MaxSinks bounds the number of sinks; each has its own queue and
// goroutines, and their outputs are checked against each other.
const MaxSinks = 64

// MaxFileSize bounds how much of a config file is read: a config is a
// few KiB (the full example is 12 KiB), and `--config /dev/zero` must
// fail at once, not fill memory. The decoder is not fast on pathological
// input: 4 MiB of keys took it 15 s and 330 MiB on a loaded machine, so
// the bound is 1 MiB rather than more.
const MaxFileSize = 1 << 20

// Error is a config error: it names the file, the key and, where the key
// appears in the file, its line. Its message is always one line, because
// the CLI prints it as the single stderr line of exit status 2.
type Error struct {
	File string
	Line int    // 0 when the key is not in the file (a default)
	Key  string // dotted, sinks as sinks[i]
	Msg  string
	Err  error // the cause, where there is one; Msg already says it
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString("config ")
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString("key ")
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Msg))
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Load reads and parses the config file at name, at most MaxFileSize
// bytes of it.
func Load(name string) (*Config, error) {
	src, err := readLimited(name, MaxFileSize)
	if err != nil {
		return nil, &Error{File: name, Msg: err.Error(), Err: err}
	}
	return Parse(name, src)
}

// ErrTooLarge is wrapped by the error for a file larger than its limit.
var ErrTooLarge = errors.New("file too large")

// readLimited reads at most limit bytes of name; a longer file is an
// error that wraps ErrTooLarge. Its errors do not repeat the name.
func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading the file: %w", unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the file: %w", unwrapPath(err))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: larger than the limit of %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}

// unwrapPath drops the *PathError's "open NAME:" prefix (the message
// names the file already) and keeps its cause.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// LoadDefault implements `run`'s config lookup: the explicit file when one
// is given, else DefaultPath when it exists, else the embedded default.
// It returns the config and where it came from.
func LoadDefault(explicit string) (*Config, string, error) {
	if explicit != "" {
		c, err := Load(explicit)
		return c, explicit, err
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		c, err := Load(DefaultPath)
		return c, DefaultPath, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, DefaultPath, &Error{File: DefaultPath, Msg: unwrapPath(err).Error(), Err: err}
	}
	c, err := Parse(EmbeddedName, embedded)
	return c, EmbeddedName, err
}

// fileConfig decodes sinks as primitives: each one needs its type's
// defaults filled in before its keys are decoded over them, and a TOML
// array of tables would otherwise start every element from zero.
type fileConfig struct {
	Config
	Sinks []toml.Primitive `toml:"sinks"`
}

// sinkProbe finds out, per sink, whether keys whose default depends on
// other keys were set: a nil pointer is a key the file left out, however
// it was written (a [table], an inline table, a dotted key).
type sinkProbe struct {
	Type  *string `toml:"type"`
	Kafka *struct {
		WhenFull *string `toml:"when_full"`
		Spool    *struct {
			Dir *string `toml:"dir"`
		} `toml:"spool"`
	} `toml:"kafka"`
}

// Parse decodes src over the defaults, rejects keys the Config does not
// have, and validates the result. name is used in error messages.
func Parse(name string, src []byte) (*Config, error) {
	if len(src) > MaxFileSize {
		return nil, &Error{File: name, Msg: fmt.Sprintf("%v: larger than the limit of %d bytes", ErrTooLarge, MaxFileSize), Err: ErrTooLarge}
	}
	p := parser{name: name, src: src}
	var deepAt int
	p.index, deepAt = locate(src)
	if deepAt > 0 {
		return nil, &Error{File: name, Line: deepAt, Msg: fmt.Sprintf("arrays or inline tables nested deeper than %d levels", MaxNesting)}
	}
	cfg, err := p.parse()
	if err != nil {
		return nil, err
	}
	cfg.lines = p.lines()
	cfg.source = name
	if err := cfg.validate(); err != nil {
		return nil, p.keyed(err)
	}
	return cfg, nil
}

type parser struct {
	name  string
	src   []byte
	tree  map[string]any // the decoder's generic view, to locate type errors
	index lineIndex
}

func (p *parser) lines() lineIndex { return p.index }

// errorAt builds the error for an internal key ("sinks.0.x").
func (p *parser) errorAt(key, msg string, err error) *Error {
	return &Error{File: p.name, Line: p.lines().line(key), Key: displayKey(key), Msg: msg, Err: err}
}

// keyed gives a validation error its file and line.
func (p *parser) keyed(err error) error {
	var ve *Error
	if errors.As(err, &ve) {
		ve.File = p.name
		ve.Line = p.lines().line(ve.Key)
		ve.Key = displayKey(ve.Key)
	}
	return err
}

func (p *parser) parse() (*Config, error) {
	fc := fileConfig{Config: Default()}
	fc.Config.Sinks = nil
	md, err := toml.NewDecoder(bytes.NewReader(p.src)).Decode(&fc)
	if err != nil {
		return nil, p.decodeError("", reflect.TypeOf(Config{}), err)
	}
	if len(fc.Sinks) > MaxSinks {
		return nil, p.errorAt("sinks."+strconv.Itoa(MaxSinks), fmt.Sprintf("more than %d sinks", MaxSinks), nil)
	}
	cfg := fc.Config
	cfg.Sinks = make([]Sink, 0, len(fc.Sinks))
	for i, prim := range fc.Sinks {
		key := "sinks." + strconv.Itoa(i)
		var probe sinkProbe
		if err := md.PrimitiveDecode(prim, &probe); err != nil {
			return nil, p.decodeError(key, reflect.TypeOf(Sink{}), err)
		}
		typ := ""
		if probe.Type != nil {
			typ = *probe.Type
		}
		s := DefaultSink("", typ)
		if err := md.PrimitiveDecode(prim, &s); err != nil {
			return nil, p.decodeError(key, reflect.TypeOf(Sink{}), err)
		}
		if k := probe.Kafka; s.Kafka != nil {
			// One when_full per sink: the spool follows the queue's policy
			// unless the kafka table sets its own.
			if k == nil || k.WhenFull == nil {
				s.Kafka.WhenFull = s.WhenFull
			}
			// Without a spool, records not acked when the agent stops are
			// lost; "" stays available to turn it off.
			if k == nil || k.Spool == nil || k.Spool.Dir == nil {
				s.Kafka.Spool.Dir = DefaultSpoolDir(cfg.StateDir, s.Name)
			}
		}
		cfg.Sinks = append(cfg.Sinks, s)
	}
	if len(fc.Sinks) == 0 && !md.IsDefined("sinks") {
		cfg.Sinks = Default().Sinks
	}
	if und := md.Undecoded(); len(und) > 0 {
		if err := p.decodeTree(); err != nil {
			return nil, err
		}
		key := p.indexKey(und[0])
		return nil, p.errorAt(key, "unknown key", nil)
	}
	return &cfg, nil
}

// DefaultSpoolDir is a Kafka sink's spool unless spool.dir is set.
func DefaultSpoolDir(stateDir, sink string) string {
	return strings.TrimSuffix(stateDir, "/") + "/spool/" + sink
}

// decodeTree decodes the document generically, into p.tree, which no
// type can fail: the tree locates errors of the typed decode.
func (p *parser) decodeTree() error {
	if p.tree != nil {
		return nil
	}
	_, err := toml.NewDecoder(bytes.NewReader(p.src)).Decode(&p.tree)
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: p.name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message, Err: err}
	}
	if err != nil {
		return &Error{File: p.name, Msg: "cannot decode: " + err.Error(), Err: err}
	}
	return nil
}

// decodeError turns an error of the typed decode into an *Error. A syntax
// error is the generic decode's too, and says where it is. A value a type
// rejects is a toml.ParseError naming the key. A value of the wrong TOML
// type is an untyped error, so its key is found by walking the tree
// against the Go type (at prefix, e.g. "sinks.1", within the document).
func (p *parser) decodeError(prefix string, t reflect.Type, err error) error {
	if terr := p.decodeTree(); terr != nil {
		return terr
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key := pe.LastKey
		if prefix != "" {
			// Keys inside an array of tables carry no index; the prefix
			// says which element failed.
			key = prefix + strings.TrimPrefix(key, strings.SplitN(prefix, ".", 2)[0])
		}
		return p.errorAt(key, pe.Message, err)
	}
	if key, msg := mismatch(t, lookupTree(p.tree, prefix), prefix); key != "" {
		return p.errorAt(key, msg, err)
	}
	return &Error{File: p.name, Msg: "cannot decode: " + err.Error(), Err: err}
}

// lookupTree returns the value at an internal key ("sinks.1"), or nil.
func lookupTree(tree map[string]any, key string) any {
	var v any = tree
	if key == "" {
		return v
	}
	for _, part := range strings.Split(key, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[part]
		case []map[string]any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// indexKey adds the array index to an undecoded key inside an array of
// tables, which toml reports without one: the first element that holds
// the key is the one that has it.
func (p *parser) indexKey(k toml.Key) string {
	if len(k) < 2 {
		return strings.Join(k, ".")
	}
	var walk func(v any, rest toml.Key, path string) string
	walk = func(v any, rest toml.Key, path string) string {
		if len(rest) == 0 {
			return path
		}
		switch x := v.(type) {
		case map[string]any:
			if c, ok := x[rest[0]]; ok {
				return walk(c, rest[1:], join(path, rest[0]))
			}
		case []map[string]any:
			for i, e := range x {
				if r := walk(e, rest, path+"."+strconv.Itoa(i)); r != "" {
					return r
				}
			}
		case []any:
			for i, e := range x {
				if r := walk(e, rest, path+"."+strconv.Itoa(i)); r != "" {
					return r
				}
			}
		}
		return ""
	}
	if r := walk(p.tree, k, ""); r != "" {
		return r
	}
	return strings.Join(k, ".")
}

var (
	unmarshalerType     = reflect.TypeFor[toml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// mismatch finds the first value in v (under path) whose TOML type the Go
// type t cannot hold, the way the decoder matches them, and says why.
// Types that decode themselves report their own, typed, errors.
func mismatch(t reflect.Type, v any, path string) (string, string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if pt := reflect.PointerTo(t); pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) || v == nil {
		return "", ""
	}
	want := ""
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			want = "a table"
			break
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if f, ok := fieldFor(t, k); ok {
				if key, msg := mismatch(f.Type, m[k], join(path, k)); key != "" {
					return key, msg
				}
			}
		}
		return "", ""
	case reflect.Slice:
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice {
			want = "an array"
			break
		}
		for i := range rv.Len() {
			if key, msg := mismatch(t.Elem(), rv.Index(i).Interface(), path+"."+strconv.Itoa(i)); key != "" {
				return key, msg
			}
		}
		return "", ""
	case reflect.String:
		if _, ok := v.(string); !ok {
			want = "a string"
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			want = "a boolean (true or false)"
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, ok := v.(int64); !ok {
			want = "an integer"
		}
	}
	if want == "" {
		return "", ""
	}
	return path, fmt.Sprintf("must be %s, not %s", want, tomlTypeName(v))
}

// fieldFor finds the struct field for a TOML key as the decoder does:
// the exact tag name first, else one that differs only in case.
func fieldFor(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold *reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if fold == nil && strings.EqualFold(name, key) {
			fold = &f
		}
	}
	if fold != nil {
		return *fold, true
	}
	return reflect.StructField{}, false
}

// displayKey turns the internal "sinks.1.when_full" into "sinks[1].when_full".
func displayKey(k string) string {
	parts := strings.Split(k, ".")
	var b strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// KeyError builds a config error for key (dotted, sinks as "sinks.0.x")
// with the key's line in the file the config came from, for problems
// found after Parse, such as a watched path the capture cannot use or an
// option a stage rejects. source names the config where it did not come
// from a file (a config built in code).
func (c *Config) KeyError(source, key string, err error) *Error {
	if c.source != "" {
		source = c.source
	}
	return &Error{File: source, Line: c.lines.line(key), Key: displayKey(key), Msg: err.Error(), Err: err}
}
