package blockcache

import "time"

// SetHotSettle sets how long r's hot partitions must not have grown before
// its asks of fresh objects name them (hotSettle by default).
func SetHotSettle(r *Reader, d time.Duration) { r.hot.settle = d }
