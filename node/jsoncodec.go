package node

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// strictJSON makes the Connect handlers refuse JSON requests with unknown
// fields (INVALID_ARGUMENT naming the field) instead of dropping them, as
// connect's own JSON codec does: a misspelled "partiton" must not go
// unnoticed. Binary protobuf keeps ignoring unknown fields (that is how
// schemas evolve on the wire).
var strictJSON = connect.WithHandlerOptions(
	connect.WithCodec(strictJSONCodec{name: "json"}),
	connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
)

type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }

func (strictJSONCodec) IsBinary() bool { return false }

func (strictJSONCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.Marshal(pm)
}

func (strictJSONCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (strictJSONCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(b, pm)
}
