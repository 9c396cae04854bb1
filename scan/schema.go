package scan

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/varve-io/varve/metadata"
)

// ErrorColumn is the column a typed scan fills with the reason a record
// did not match the topic schema (null when it matched).
const ErrorColumn = "_error"

// Limits on topic schemas.
const (
	maxSchemaFields   = 1000
	maxSchemaTypeLen  = 4096
	maxSchemaTypeNest = 16
	// maxSchemaBytes bounds a schema's JSON: a topic is one etcd value,
	// and etcd refuses requests over 1.5 MiB by default.
	maxSchemaBytes = 256 << 10
)

// ValueSchema is a parsed topic schema: the typed columns a scan adds and
// how each is read from a record value.
type ValueSchema struct {
	Format string
	Fields []SchemaField
}

// SchemaField is one typed column.
type SchemaField struct {
	// Name is the column name.
	Name string
	// JSON is the member of the value's object it is read from.
	JSON string
	// Type is the Arrow type; TypeName its textual form.
	Type     arrow.DataType
	TypeName string
	// Nullable false makes a missing or null member a mismatch. The column
	// itself is always nullable: a record that does not match has nulls in
	// every typed column.
	Nullable bool
}

// fieldDef is the textual (JSON) definition of a field.
type fieldDef struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable *bool  `json:"nullable,omitempty"`
	JSON     string `json:"json,omitempty"`
}

// reservedColumns are the record columns a field cannot be named after.
var reservedColumns = map[string]bool{
	"topic": true, "partition": true, "offset": true, "timestamp": true,
	"key": true, "value": true, "headers": true, ErrorColumn: true,
}

// ParseTopicSchema checks a topic schema (format and the JSON list of
// fields, see docs/scan.md) and returns it parsed. Every failure wraps
// metadata.ErrInvalidArgument and names what is wrong.
func ParseTopicSchema(ts metadata.TopicSchema) (*ValueSchema, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: topic schema: %s", metadata.ErrInvalidArgument, fmt.Sprintf(format, args...))
	}
	switch ts.Format {
	case metadata.SchemaJSON:
	case "protobuf", "avro":
		return nil, bad("format %s is not supported yet (only json)", ts.Format)
	default:
		return nil, bad("unknown format %q (want json)", ts.Format)
	}
	if len(ts.Fields) > maxSchemaBytes {
		return nil, bad("fields are %d bytes of JSON, the limit is %d", len(ts.Fields), maxSchemaBytes)
	}
	dec := json.NewDecoder(strings.NewReader(ts.Fields))
	dec.DisallowUnknownFields()
	var defs []fieldDef
	if err := dec.Decode(&defs); err != nil {
		return nil, bad(`fields must be a JSON list of {"name", "type", "nullable", "json"} objects: %v`, err)
	}
	if dec.More() {
		return nil, bad("fields: trailing data after the JSON list")
	}
	if len(defs) == 0 {
		return nil, bad("no fields")
	}
	if len(defs) > maxSchemaFields {
		return nil, bad("%d fields, the limit is %d", len(defs), maxSchemaFields)
	}
	s := &ValueSchema{Format: ts.Format}
	names := map[string]bool{}
	members := map[string]string{}
	for i, d := range defs {
		switch {
		case d.Name == "":
			return nil, bad("field %d has no name", i)
		case reservedColumns[d.Name]:
			return nil, bad("field %q clashes with a record column (topic, partition, offset, timestamp, key, value, headers, %s); name the column otherwise and set \"json\": %q", d.Name, ErrorColumn, d.Name)
		case names[d.Name]:
			return nil, bad("field %q is defined twice", d.Name)
		case d.Type == "":
			return nil, bad("field %q has no type", d.Name)
		case len(d.Type) > maxSchemaTypeLen:
			return nil, bad("field %q: type is %d characters, the limit is %d", d.Name, len(d.Type), maxSchemaTypeLen)
		}
		names[d.Name] = true
		dt, err := parseArrowType(d.Type)
		if err != nil {
			return nil, bad("field %q: %v", d.Name, err)
		}
		f := SchemaField{Name: d.Name, JSON: d.JSON, Type: dt, TypeName: typeName(dt), Nullable: d.Nullable == nil || *d.Nullable}
		if f.JSON == "" {
			f.JSON = f.Name
		}
		if other, dup := members[f.JSON]; dup {
			return nil, bad("fields %q and %q both read JSON member %q", other, f.Name, f.JSON)
		}
		members[f.JSON] = f.Name
		s.Fields = append(s.Fields, f)
	}
	return s, nil
}

// Canonical is the schema's definition in its canonical form: the field
// list with normalised type names, "nullable" only when false and "json"
// only when it differs from the name.
func (s *ValueSchema) Canonical() metadata.TopicSchema {
	defs := make([]fieldDef, len(s.Fields))
	for i, f := range s.Fields {
		defs[i] = fieldDef{Name: f.Name, Type: f.TypeName}
		if !f.Nullable {
			defs[i].Nullable = new(bool)
		}
		if f.JSON != f.Name {
			defs[i].JSON = f.JSON
		}
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // list<utf8>, not list\u003cutf8\u003e
	_ = enc.Encode(defs)
	return metadata.TopicSchema{Format: s.Format, Fields: strings.TrimSuffix(b.String(), "\n")}
}

// arrowFields are the typed columns (always nullable).
func (s *ValueSchema) arrowFields() []arrow.Field {
	out := make([]arrow.Field, len(s.Fields))
	for i, f := range s.Fields {
		out[i] = arrow.Field{Name: f.Name, Type: f.Type, Nullable: true}
	}
	return out
}

// parseArrowType parses an Arrow type name: bool, int8…int64,
// uint8…uint64, float32, float64, utf8 (string), binary,
// timestamp[s|ms|us|ns], date32, list<T>, struct<name: T, ...>.
func parseArrowType(s string) (arrow.DataType, error) {
	p := typeParser{s: s}
	dt, err := p.parse(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("type %q: unexpected %q at %d", s, p.s[p.i:], p.i)
	}
	return dt, nil
}

type typeParser struct {
	s string
	i int
}

func (p *typeParser) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *typeParser) word() string {
	p.ws()
	j := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			p.i++
			continue
		}
		break
	}
	return p.s[j:p.i]
}

func (p *typeParser) expect(c byte) error {
	p.ws()
	if p.i >= len(p.s) || p.s[p.i] != c {
		got := "the end"
		if p.i < len(p.s) {
			got = fmt.Sprintf("%q", p.s[p.i:p.i+1])
		}
		return fmt.Errorf("type %q: want %q at %d, got %s", p.s, c, p.i, got)
	}
	p.i++
	return nil
}

func (p *typeParser) parse(depth int) (arrow.DataType, error) {
	if depth > maxSchemaTypeNest {
		return nil, fmt.Errorf("type %q: nested more than %d levels", p.s, maxSchemaTypeNest)
	}
	start := p.i
	w := strings.ToLower(p.word())
	switch w {
	case "bool", "boolean":
		return arrow.FixedWidthTypes.Boolean, nil
	case "int8":
		return arrow.PrimitiveTypes.Int8, nil
	case "int16":
		return arrow.PrimitiveTypes.Int16, nil
	case "int32":
		return arrow.PrimitiveTypes.Int32, nil
	case "int64":
		return arrow.PrimitiveTypes.Int64, nil
	case "uint8":
		return arrow.PrimitiveTypes.Uint8, nil
	case "uint16":
		return arrow.PrimitiveTypes.Uint16, nil
	case "uint32":
		return arrow.PrimitiveTypes.Uint32, nil
	case "uint64":
		return arrow.PrimitiveTypes.Uint64, nil
	case "float32", "float":
		return arrow.PrimitiveTypes.Float32, nil
	case "float64", "double":
		return arrow.PrimitiveTypes.Float64, nil
	case "utf8", "string":
		return arrow.BinaryTypes.String, nil
	case "binary":
		return arrow.BinaryTypes.Binary, nil
	case "date32":
		return arrow.FixedWidthTypes.Date32, nil
	case "timestamp":
		return p.timestamp()
	case "list":
		if err := p.expect('<'); err != nil {
			return nil, err
		}
		elem, err := p.parse(depth + 1)
		if err != nil {
			return nil, err
		}
		if err := p.expect('>'); err != nil {
			return nil, err
		}
		return arrow.ListOf(elem), nil
	case "struct":
		return p.structOf(depth)
	case "":
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("type %q: want a type name at its end", p.s)
		}
		return nil, fmt.Errorf("type %q: want a type name at %d, got %q", p.s, start, p.s[p.i:p.i+1])
	}
	return nil, fmt.Errorf("unknown type %q (want bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, utf8, binary, timestamp[s|ms|us|ns], date32, list<T> or struct<name: T, ...>)", w)
}

// timestamp parses the rest of timestamp[unit].
func (p *typeParser) timestamp() (arrow.DataType, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	unit := p.word()
	if err := p.expect(']'); err != nil {
		return nil, err
	}
	var u arrow.TimeUnit
	switch unit {
	case "s":
		u = arrow.Second
	case "ms":
		u = arrow.Millisecond
	case "us":
		u = arrow.Microsecond
	case "ns":
		u = arrow.Nanosecond
	default:
		return nil, fmt.Errorf("type %q: timestamp unit %q (want s, ms, us or ns)", p.s, unit)
	}
	return &arrow.TimestampType{Unit: u, TimeZone: "UTC"}, nil
}

// structOf parses the rest of struct<name: T, ...>.
func (p *typeParser) structOf(depth int) (arrow.DataType, error) {
	if err := p.expect('<'); err != nil {
		return nil, err
	}
	var fields []arrow.Field
	seen := map[string]bool{}
	for {
		name := p.word()
		if name == "" {
			return nil, fmt.Errorf("type %q: want a struct field name at %d", p.s, p.i)
		}
		if seen[name] {
			return nil, fmt.Errorf("type %q: struct field %q twice", p.s, name)
		}
		seen[name] = true
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		ft, err := p.parse(depth + 1)
		if err != nil {
			return nil, err
		}
		fields = append(fields, arrow.Field{Name: name, Type: ft, Nullable: true})
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		break
	}
	if err := p.expect('>'); err != nil {
		return nil, err
	}
	return arrow.StructOf(fields...), nil
}

// typeName is the canonical name of a type parseArrowType accepts.
func typeName(dt arrow.DataType) string {
	switch t := dt.(type) {
	case *arrow.TimestampType:
		return "timestamp[" + t.Unit.String() + "]"
	case *arrow.ListType:
		return "list<" + typeName(t.Elem()) + ">"
	case *arrow.StructType:
		parts := make([]string, t.NumFields())
		for i, f := range t.Fields() {
			parts[i] = f.Name + ": " + typeName(f.Type)
		}
		return "struct<" + strings.Join(parts, ", ") + ">"
	}
	return dt.String()
}
