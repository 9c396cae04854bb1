package segment

import (
	"errors"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Level is a zstd compression level of a Writer.
type Level int

const (
	// LevelFastest is what ingest uses (Build): the flush is on the ack path.
	LevelFastest Level = iota
	// LevelDefault compresses 2-3% better for 15-40% more CPU: worth it for
	// objects compaction writes in the background and that live for the
	// whole retention.
	LevelDefault
)

var defaultEncoder = sync.OnceValue(func() *zstd.Encoder { return newEncoder(zstd.SpeedDefault) })

// Writer assembles a segment object one block at a time, compressing each
// block as it is added, so that a writer of a large object (compaction)
// holds one block's records and the compressed object, never every
// block's records at once. The object is the same as Build makes of the
// same blocks at the same level.
type Writer struct {
	enc     *zstd.Encoder
	encoded [][]byte
	infos   []BlockInfo
	off     int64
	err     error
}

// NewWriter returns an empty Writer.
func NewWriter(level Level) *Writer {
	enc := encoder()
	if level == LevelDefault {
		enc = defaultEncoder()
	}
	return &Writer{enc: enc, off: HeaderSize}
}

// Add compresses b as the object's next block and returns its BlockInfo.
// The builder may be reused or dropped afterwards. A block Build would
// refuse is an error, and the Writer then refuses everything else.
func (w *Writer) Add(b *BlockBuilder) (BlockInfo, error) {
	if w.err != nil {
		return BlockInfo{}, w.err
	}
	if err := checkBuilder(len(w.infos), b); err != nil {
		w.err = err
		return BlockInfo{}, err
	}
	e := encodeBlock(b, w.enc)
	bi := blockInfo(b, w.off, int64(len(e)))
	w.encoded = append(w.encoded, e)
	w.infos = append(w.infos, bi)
	w.off += int64(len(e))
	return bi, nil
}

// Blocks returns how many blocks were added.
func (w *Writer) Blocks() int { return len(w.infos) }

// Size returns the stored size of the blocks added so far.
func (w *Writer) Size() int64 { return w.off - HeaderSize }

// Finish returns the object and every block's BlockInfo.
func (w *Writer) Finish() ([]byte, []BlockInfo, error) {
	if w.err != nil {
		return nil, nil, w.err
	}
	if len(w.infos) == 0 {
		return nil, nil, errors.New("build segment: no blocks")
	}
	return assemble(w.encoded, w.infos, w.off)
}
