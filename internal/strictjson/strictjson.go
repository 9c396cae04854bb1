package strictjson

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// HandlerOption makes Connect handlers decode JSON requests (both of
// connect's JSON codec names) with the strict codec.
var HandlerOption = connect.WithHandlerOptions(
	connect.WithCodec(codec{name: "json"}),
	connect.WithCodec(codec{name: "json; charset=utf-8"}),
)

type codec struct{ name string }

func (c codec) Name() string { return c.name }

func (codec) IsBinary() bool { return false }

func (codec) Marshal(m any) ([]byte, error) {
	pm, err := message(m)
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(pm)
}

func (codec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, err := message(m)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (codec) Unmarshal(b []byte, m any) error {
	pm, err := message(m)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(b, pm)
}

func message(m any) (proto.Message, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return pm, nil
}
