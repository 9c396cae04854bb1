// Package strictjson is a Connect codec for JSON requests that refuses
// unknown fields (INVALID_ARGUMENT naming the field) instead of dropping
// them, as connect's own JSON codec does: a misspelled "partiton" must not
// go unnoticed. Binary protobuf keeps ignoring unknown fields (that is how
// schemas evolve on the wire). It owns that codec only and imports nothing
// of Varve.
package strictjson
