// Package wire holds the bounds-checked varint reader, CRC-32C table and
// capped zstd decoder shared by the segment format (package segment) and
// the Kafka batch codec (package kafkabatch). Like them, it depends only on
// the standard library and github.com/klauspost/compress.
package wire
