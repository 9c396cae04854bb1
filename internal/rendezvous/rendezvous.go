// Package rendezvous is rendezvous (highest random weight) hashing, as
// every node must compute it alike (no per-process seed): the fetch
// nodes' owners of blocks and objects (blockcache) and the writer a
// producer client is placed on (node, docs/metadata.md, "Producer
// placement").
package rendezvous

import "hash/fnv"

// Score is the weight of node id for key: FNV-1a of id, a zero byte and
// key, finished with Mix.
func Score(id, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return Mix(h.Sum64())
}

// Mix is the SplitMix64 finalizer: FNV's low bits spread poorly, and
// similar ids would score alike.
func Mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Pick returns the id of ids with the highest Score for key (the lowest
// id of a tie), "" when ids is empty: the same for the same key and ids in
// any order, and when an id comes or goes only the keys it wins or held
// move.
func Pick(key string, ids []string) string {
	best, bestScore := "", uint64(0)
	for _, id := range ids {
		if s := Score(id, key); best == "" || s > bestScore || s == bestScore && id < best {
			best, bestScore = id, s
		}
	}
	return best
}
