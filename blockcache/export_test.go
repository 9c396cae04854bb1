package blockcache

import "time"

// SetHotSettle sets how long r's hot partitions must not have grown before
// its asks of fresh objects name them (hotSettle by default).
func SetHotSettle(r *Reader, d time.Duration) { r.hot.settle = d }

// Decoded reports whether m holds the block at object+off decoded (a
// block added by its stored bytes only is decoded at its first Get).
func Decoded(m *Memory, object string, off int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[blockKey{object, off}]
	if !ok {
		return false
	}
	e := el.Value.(*cacheEntry)
	return e.lazy == nil || e.lazy.recs != nil
}
