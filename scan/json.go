package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// jsonRow reads JSON object values into the typed columns of a
// ValueSchema. A value is checked completely before anything is appended,
// so a mismatch appends nulls to every typed column and its reason to the
// error column: the builders never hold half a row.
type jsonRow struct {
	fields  []SchemaField
	convs   []conv
	byName  map[string]int
	spans   [][]byte // the raw member of each field in the current value
	scratch []byte
}

func newJSONRow(s *ValueSchema) *jsonRow {
	r := &jsonRow{fields: s.Fields, byName: make(map[string]int, len(s.Fields)), spans: make([][]byte, len(s.Fields))}
	for i, f := range s.Fields {
		r.byName[f.JSON] = i
		r.convs = append(r.convs, convFor(f.Type))
	}
	return r
}

// match checks value against the schema and leaves each field's raw member
// in r.spans (nil when absent or null). It returns why it does not match.
func (r *jsonRow) match(value []byte) error {
	for i := range r.spans {
		r.spans[i] = nil
	}
	if value == nil {
		return errors.New("value is null")
	}
	err := eachMember(value, func(key, raw []byte) error {
		i, ok := r.byName[string(key)]
		if !ok {
			return nil // members the schema does not name are ignored
		}
		if !isNull(raw) {
			r.spans[i] = raw
		} else {
			r.spans[i] = nil
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("value is not a JSON object: %w", err)
	}
	for i, f := range r.fields {
		raw := r.spans[i]
		if raw == nil {
			if !f.Nullable {
				return fmt.Errorf("field %q: missing or null, and not nullable", f.JSON)
			}
			continue
		}
		if err := r.convs[i].check(raw); err != nil {
			return fmt.Errorf("field %q: %w", f.JSON, err)
		}
	}
	return nil
}

// appendTo appends the fields matched last to the builders (one per
// field, in order; nil for a field not returned).
func (r *jsonRow) appendTo(bs []array.Builder) {
	for i, raw := range r.spans {
		if bs[i] == nil {
			continue
		}
		if raw == nil {
			bs[i].AppendNull()
			continue
		}
		r.convs[i].appendTo(bs[i], raw)
	}
}

// conv checks and appends one JSON value (never null) of an Arrow type.
type conv interface {
	check(raw []byte) error
	appendTo(b array.Builder, raw []byte) // only after check succeeded
}

func convFor(dt arrow.DataType) conv {
	switch t := dt.(type) {
	case *arrow.BooleanType:
		return boolConv{}
	case *arrow.Int8Type:
		return intConv{bits: 8}
	case *arrow.Int16Type:
		return intConv{bits: 16}
	case *arrow.Int32Type:
		return intConv{bits: 32}
	case *arrow.Int64Type:
		return intConv{bits: 64}
	case *arrow.Uint8Type:
		return intConv{bits: 8, unsigned: true}
	case *arrow.Uint16Type:
		return intConv{bits: 16, unsigned: true}
	case *arrow.Uint32Type:
		return intConv{bits: 32, unsigned: true}
	case *arrow.Uint64Type:
		return intConv{bits: 64, unsigned: true}
	case *arrow.Float32Type:
		return floatConv{bits: 32}
	case *arrow.Float64Type:
		return floatConv{bits: 64}
	case *arrow.StringType:
		return stringConv{}
	case *arrow.BinaryType:
		return binaryConv{}
	case *arrow.TimestampType:
		return timestampConv{unit: t.Unit}
	case *arrow.Date32Type:
		return dateConv{}
	case *arrow.ListType:
		return listConv{elem: convFor(t.Elem())}
	case *arrow.StructType:
		c := structConv{byName: map[string]int{}}
		for i, f := range t.Fields() {
			c.byName[f.Name] = i
			c.fields = append(c.fields, convFor(f.Type))
		}
		return c
	}
	panic("scan: no JSON conversion for " + dt.String()) // parseArrowType returns no other type
}

func isNull(raw []byte) bool { return len(raw) == 4 && string(raw) == "null" }

// show quotes a raw JSON value for an error message, cut to 40 bytes.
func show(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:37]) + "..."
	}
	return string(raw)
}

type boolConv struct{}

func (boolConv) check(raw []byte) error {
	if string(raw) == "true" || string(raw) == "false" {
		return nil
	}
	return fmt.Errorf("want a boolean, got %s", show(raw))
}

func (boolConv) appendTo(b array.Builder, raw []byte) {
	b.(*array.BooleanBuilder).Append(raw[0] == 't')
}

type intConv struct {
	bits     int
	unsigned bool
}

func (c intConv) parse(raw []byte) (int64, uint64, error) {
	if c.unsigned {
		u, err := strconv.ParseUint(string(raw), 10, c.bits)
		if err != nil {
			return 0, 0, fmt.Errorf("want a uint%d, got %s", c.bits, show(raw))
		}
		return 0, u, nil
	}
	v, err := strconv.ParseInt(string(raw), 10, c.bits)
	if err != nil {
		return 0, 0, fmt.Errorf("want an int%d, got %s", c.bits, show(raw))
	}
	return v, 0, nil
}

func (c intConv) check(raw []byte) error {
	_, _, err := c.parse(raw)
	return err
}

func (c intConv) appendTo(b array.Builder, raw []byte) {
	v, u, _ := c.parse(raw)
	switch b := b.(type) {
	case *array.Int8Builder:
		b.Append(int8(v))
	case *array.Int16Builder:
		b.Append(int16(v))
	case *array.Int32Builder:
		b.Append(int32(v))
	case *array.Int64Builder:
		b.Append(v)
	case *array.Uint8Builder:
		b.Append(uint8(u))
	case *array.Uint16Builder:
		b.Append(uint16(u))
	case *array.Uint32Builder:
		b.Append(uint32(u))
	case *array.Uint64Builder:
		b.Append(u)
	}
}

type floatConv struct{ bits int }

func (c floatConv) parse(raw []byte) (float64, error) {
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return 0, fmt.Errorf("want a float%d, got %s", c.bits, show(raw))
	}
	v, err := strconv.ParseFloat(string(raw), c.bits)
	if err != nil || math.IsInf(v, 0) {
		return 0, fmt.Errorf("want a float%d, got %s", c.bits, show(raw))
	}
	return v, nil
}

func (c floatConv) check(raw []byte) error {
	_, err := c.parse(raw)
	return err
}

func (c floatConv) appendTo(b array.Builder, raw []byte) {
	v, _ := c.parse(raw)
	if c.bits == 32 {
		b.(*array.Float32Builder).Append(float32(v))
		return
	}
	b.(*array.Float64Builder).Append(v)
}

// jsonString returns the text of a JSON string (raw includes the quotes):
// a slice of raw when it has no escapes.
func jsonString(raw []byte) ([]byte, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, fmt.Errorf("want a string, got %s", show(raw))
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 {
		if !utf8.Valid(in) {
			return nil, errors.New("string is not valid UTF-8")
		}
		return in, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("bad string %s: %v", show(raw), err)
	}
	return []byte(s), nil
}

type stringConv struct{}

func (stringConv) check(raw []byte) error {
	_, err := jsonString(raw)
	return err
}

func (stringConv) appendTo(b array.Builder, raw []byte) {
	s, _ := jsonString(raw)
	b.(*array.StringBuilder).BinaryBuilder.Append(s)
}

type binaryConv struct{}

func (binaryConv) parse(raw []byte) ([]byte, error) {
	s, err := jsonString(raw)
	if err != nil {
		return nil, fmt.Errorf("want base64 in a string, got %s", show(raw))
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		return nil, fmt.Errorf("want base64 in a string: %v", err)
	}
	return out[:n], nil
}

func (c binaryConv) check(raw []byte) error {
	_, err := c.parse(raw)
	return err
}

func (c binaryConv) appendTo(b array.Builder, raw []byte) {
	v, _ := c.parse(raw)
	b.(*array.BinaryBuilder).Append(v)
}

// timestampConv reads a number (in the column's unit since the epoch) or
// an RFC 3339 string.
type timestampConv struct{ unit arrow.TimeUnit }

func (c timestampConv) parse(raw []byte) (int64, error) {
	if raw[0] == '"' {
		s, err := jsonString(raw)
		if err != nil {
			return 0, err
		}
		t, err := time.Parse(time.RFC3339Nano, string(s))
		if err != nil {
			return 0, fmt.Errorf("want an RFC 3339 time or a number of %s, got %s", c.unit, show(raw))
		}
		switch c.unit {
		case arrow.Second:
			return t.Unix(), nil
		case arrow.Millisecond:
			return t.UnixMilli(), nil
		case arrow.Microsecond:
			return t.UnixMicro(), nil
		}
		return t.UnixNano(), nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an RFC 3339 time or an integer number of %s, got %s", c.unit, show(raw))
	}
	return v, nil
}

func (c timestampConv) check(raw []byte) error {
	_, err := c.parse(raw)
	return err
}

func (c timestampConv) appendTo(b array.Builder, raw []byte) {
	v, _ := c.parse(raw)
	b.(*array.TimestampBuilder).Append(arrow.Timestamp(v))
}

// dateConv reads "YYYY-MM-DD" or a number of days since the epoch.
type dateConv struct{}

func (dateConv) parse(raw []byte) (int32, error) {
	if raw[0] == '"' {
		s, err := jsonString(raw)
		if err != nil {
			return 0, err
		}
		t, err := time.Parse(time.DateOnly, string(s))
		if err != nil {
			return 0, fmt.Errorf("want a YYYY-MM-DD date, got %s", show(raw))
		}
		return int32(t.Unix() / 86400), nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("want a YYYY-MM-DD date or a number of days, got %s", show(raw))
	}
	return int32(v), nil
}

func (c dateConv) check(raw []byte) error {
	_, err := c.parse(raw)
	return err
}

func (c dateConv) appendTo(b array.Builder, raw []byte) {
	v, _ := c.parse(raw)
	b.(*array.Date32Builder).Append(arrow.Date32(v))
}

type listConv struct{ elem conv }

func (c listConv) check(raw []byte) error {
	if raw[0] != '[' {
		return fmt.Errorf("want a list, got %s", show(raw))
	}
	i := 0
	return eachElem(raw, func(e []byte) error {
		defer func() { i++ }()
		if isNull(e) {
			return nil
		}
		if err := c.elem.check(e); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		return nil
	})
}

func (c listConv) appendTo(b array.Builder, raw []byte) {
	lb := b.(*array.ListBuilder)
	lb.Append(true)
	vb := lb.ValueBuilder()
	_ = eachElem(raw, func(e []byte) error {
		if isNull(e) {
			vb.AppendNull()
		} else {
			c.elem.appendTo(vb, e)
		}
		return nil
	})
}

type structConv struct {
	fields []conv
	byName map[string]int
}

func (c structConv) check(raw []byte) error {
	if raw[0] != '{' {
		return fmt.Errorf("want an object, got %s", show(raw))
	}
	return eachMember(raw, func(key, v []byte) error {
		i, ok := c.byName[string(key)]
		if !ok || isNull(v) {
			return nil
		}
		if err := c.fields[i].check(v); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
}

func (c structConv) appendTo(b array.Builder, raw []byte) {
	sb := b.(*array.StructBuilder)
	sb.Append(true)
	spans := make([][]byte, len(c.fields))
	_ = eachMember(raw, func(key, v []byte) error {
		if i, ok := c.byName[string(key)]; ok {
			if isNull(v) {
				spans[i] = nil
			} else {
				spans[i] = v
			}
		}
		return nil
	})
	for i, v := range spans {
		if v == nil {
			sb.FieldBuilder(i).AppendNull()
		} else {
			c.fields[i].appendTo(sb.FieldBuilder(i), v)
		}
	}
}

// A small JSON scanner: it finds the extent of values without decoding
// them, and checks their syntax.

const maxJSONDepth = 64

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

var errJSONSyntax = errors.New("invalid JSON")

// skipValue returns the end of the JSON value at b[i:] (no leading space).
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, fmt.Errorf("%w: unexpected end", errJSONSyntax)
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxJSONDepth {
			return 0, fmt.Errorf("%w: nested deeper than %d", errJSONSyntax, maxJSONDepth)
		}
		end, closer := byte('}'), c == '{'
		if !closer {
			end = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == end {
			return i + 1, nil
		}
		for {
			var err error
			if closer {
				if i, err = skipString(b, i); err != nil {
					return 0, err
				}
				i = skipWS(b, i)
				if i >= len(b) || b[i] != ':' {
					return 0, fmt.Errorf("%w: want ':' at %d", errJSONSyntax, i)
				}
				i = skipWS(b, i+1)
			}
			if i, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, fmt.Errorf("%w: unexpected end", errJSONSyntax)
			}
			if b[i] == end {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, fmt.Errorf("%w: want ',' or %q at %d", errJSONSyntax, end, i)
			}
			i = skipWS(b, i+1)
		}
	case c == 't':
		return skipLit(b, i, "true")
	case c == 'f':
		return skipLit(b, i, "false")
	case c == 'n':
		return skipLit(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		j := i
		if b[j] == '-' {
			j++
		}
		digits := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == digits {
			return 0, fmt.Errorf("%w: bad number at %d", errJSONSyntax, i)
		}
		if j < len(b) && b[j] == '.' {
			j++
			k := j
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j == k {
				return 0, fmt.Errorf("%w: bad number at %d", errJSONSyntax, i)
			}
		}
		if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
			j++
			if j < len(b) && (b[j] == '+' || b[j] == '-') {
				j++
			}
			k := j
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			if j == k {
				return 0, fmt.Errorf("%w: bad number at %d", errJSONSyntax, i)
			}
		}
		return j, nil
	default:
		return 0, fmt.Errorf("%w: unexpected %q at %d", errJSONSyntax, c, i)
	}
}

func skipLit(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, fmt.Errorf("%w: bad literal at %d", errJSONSyntax, i)
	}
	return i + len(lit), nil
}

func skipString(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, fmt.Errorf("%w: want a string at %d", errJSONSyntax, i)
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		default:
			if b[j] < 0x20 {
				return 0, fmt.Errorf("%w: control character in a string at %d", errJSONSyntax, j)
			}
		}
	}
	return 0, fmt.Errorf("%w: unterminated string", errJSONSyntax)
}

// eachMember calls fn with every member of the JSON object b (the key
// unescaped, the value raw), in order; b must be exactly one object with
// optional surrounding space.
func eachMember(b []byte, fn func(key, raw []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		if i >= len(b) {
			return fmt.Errorf("%w: empty", errJSONSyntax)
		}
		return fmt.Errorf("want an object, got %s", show(b[i:]))
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, i+1)
	}
	for {
		ks := i
		ke, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[ks+1 : ke-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(b[ks:ke], &s); err != nil {
				return fmt.Errorf("%w: bad key: %v", errJSONSyntax, err)
			}
			key = []byte(s)
		}
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return fmt.Errorf("%w: want ':' at %d", errJSONSyntax, i)
		}
		i = skipWS(b, i+1)
		vs := i
		if i, err = skipValue(b, i, 1); err != nil {
			return err
		}
		if err := fn(key, b[vs:i]); err != nil {
			return err
		}
		var done bool
		if i, done, err = afterMember(b, i, '}'); err != nil || done {
			return err
		}
	}
}

// eachElem calls fn with every element of the JSON list b, raw.
func eachElem(b []byte, fn func(raw []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return fmt.Errorf("%w: want a list", errJSONSyntax)
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return trailing(b, i+1)
	}
	for {
		vs := i
		var err error
		if i, err = skipValue(b, i, 1); err != nil {
			return err
		}
		if err := fn(b[vs:i]); err != nil {
			return err
		}
		var done bool
		if i, done, err = afterMember(b, i, ']'); err != nil || done {
			return err
		}
	}
}

// afterMember moves past what follows a member of an object or list that
// end closes: done (with trailing's verdict) when end closed it, else the
// start of the next member.
func afterMember(b []byte, i int, end byte) (next int, done bool, err error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return i, false, fmt.Errorf("%w: unexpected end", errJSONSyntax)
	}
	if b[i] == end {
		return i, true, trailing(b, i+1)
	}
	if b[i] != ',' {
		return i, false, fmt.Errorf("%w: want ',' or '%c' at %d", errJSONSyntax, end, i)
	}
	return skipWS(b, i+1), false, nil
}

func trailing(b []byte, i int) error {
	if i = skipWS(b, i); i != len(b) {
		return fmt.Errorf("%w: trailing data at %d", errJSONSyntax, i)
	}
	return nil
}
