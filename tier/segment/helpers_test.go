package segment

import (
	"bytes"
	"fmt"
	"math/rand"
	"strconv"
	"testing"
	"time"
)

// blockSpec is one block to build in a test.
type blockSpec struct {
	topic     string
	partition int32
	recs      []Record
}

func builders(specs []blockSpec) []*BlockBuilder {
	bs := make([]*BlockBuilder, len(specs))
	for i, s := range specs {
		b := NewBlockBuilder(s.topic, s.partition)
		for _, r := range s.recs {
			b.Append(r)
		}
		bs[i] = b
	}
	return bs
}

func mustBuild(t testing.TB, specs []blockSpec) ([]byte, []BlockInfo) {
	t.Helper()
	obj, infos, err := Build(builders(specs))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return obj, infos
}

// diffRecords describes the first difference between two record lists, or
// returns "". Null (nil) and empty keys, values and header values differ; a
// nil and an empty header list do not.
func diffRecords(want, got []Record) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := &want[i], &got[i]
		if w.Timestamp != g.Timestamp {
			return fmt.Sprintf("record %d: timestamp %d, want %d", i, g.Timestamp, w.Timestamp)
		}
		if w.Gap != g.Gap {
			return fmt.Sprintf("record %d: offset gap %d, want %d", i, g.Gap, w.Gap)
		}
		if d := diffBytes(w.Key, g.Key); d != "" {
			return fmt.Sprintf("record %d: key %s", i, d)
		}
		if d := diffBytes(w.Value, g.Value); d != "" {
			return fmt.Sprintf("record %d: value %s", i, d)
		}
		if len(w.Headers) != len(g.Headers) {
			return fmt.Sprintf("record %d: %d headers, want %d", i, len(g.Headers), len(w.Headers))
		}
		for j := range w.Headers {
			if w.Headers[j].Key != g.Headers[j].Key {
				return fmt.Sprintf("record %d header %d: key %q, want %q", i, j, g.Headers[j].Key, w.Headers[j].Key)
			}
			if d := diffBytes(w.Headers[j].Value, g.Headers[j].Value); d != "" {
				return fmt.Sprintf("record %d header %d: value %s", i, j, d)
			}
		}
	}
	return ""
}

func diffBytes(want, got []byte) string {
	switch {
	case (want == nil) != (got == nil):
		return fmt.Sprintf("null=%v, want null=%v", got == nil, want == nil)
	case !bytes.Equal(want, got):
		return fmt.Sprintf("%q, want %q", trunc(got), trunc(want))
	}
	return ""
}

func trunc(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// infoWithoutRange drops the byte range, which depends on compression.
func infoWithoutRange(bi BlockInfo) BlockInfo {
	bi.Offset, bi.Length = 0, 0
	return bi
}

var (
	eventTypes = []string{"page_view", "page_view", "page_view", "page_view", "click", "click", "add_to_cart", "search", "checkout_started", "purchase", "login", "signup"}
	categories = []string{"shoes", "outerwear", "electronics", "kitchen", "books", "toys", "garden", "beauty", "sports", "grocery"}
	adjectives = []string{"classic", "ultra", "lightweight", "organic", "wireless", "vintage", "compact", "premium", "waterproof", "smart"}
	nouns      = []string{"runner", "jacket", "headphones", "kettle", "novel", "lamp", "backpack", "blender", "watch", "sneaker", "tent", "mug"}
	devices    = []string{"desktop", "mobile", "mobile", "mobile", "tablet"}
	oses       = []string{"iOS 19.1", "Android 16", "Windows 11", "macOS 26.0", "Android 15", "iOS 18.6", "Linux"}
	browsers   = []string{"Chrome 142", "Safari 26", "Firefox 145", "Edge 142", "Samsung Internet 29"}
	countries  = []string{"US", "US", "US", "DE", "GB", "FR", "BR", "IN", "JP", "CA", "NL", "ES"}
	referrers  = []string{"https://www.google.com/", "https://www.bing.com/", "https://t.co/", "", "", "https://news.ycombinator.com/", "https://duckduckgo.com/"}
	currencies = []string{"USD", "USD", "EUR", "GBP", "JPY"}
	variants   = []string{"control", "treatment_a", "treatment_b"}
)

func hexID(rng *rand.Rand, n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[rng.Intn(16)]
	}
	return string(b)
}

func uuid(rng *rand.Rand) string {
	return hexID(rng, 8) + "-" + hexID(rng, 4) + "-4" + hexID(rng, 3) + "-a" + hexID(rng, 3) + "-" + hexID(rng, 12)
}

// jsonEvent returns one realistic clickstream event of roughly 300 to 600
// bytes: shared structure, varied values, some random identifiers.
func jsonEvent(rng *rand.Rand, tsMillis int64) (key, value []byte) {
	user := 10000 + rng.Intn(90000)
	typ := eventTypes[rng.Intn(len(eventTypes))]
	cat := categories[rng.Intn(len(categories))]
	slug := adjectives[rng.Intn(len(adjectives))] + "-" + nouns[rng.Intn(len(nouns))]
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"event_id":"%s","user_id":%d,"ts":"%s","type":"%s",`,
		uuid(rng), user, time.UnixMilli(tsMillis).UTC().Format("2006-01-02T15:04:05.000Z"), typ)
	fmt.Fprintf(&b, `"url":"/products/%s/%s-%d","session":{"id":"%s","device":"%s","os":"%s","browser":"%s","country":"%s","referrer":"%s","page":%d},`,
		cat, slug, 100000+rng.Intn(900000), hexID(rng, 16), devices[rng.Intn(len(devices))], oses[rng.Intn(len(oses))],
		browsers[rng.Intn(len(browsers))], countries[rng.Intn(len(countries))], referrers[rng.Intn(len(referrers))], 1+rng.Intn(40))
	fmt.Fprintf(&b, `"props":{"category":"%s","price":%d.%02d,"currency":"%s"`,
		cat, 5+rng.Intn(500), rng.Intn(100), currencies[rng.Intn(len(currencies))])
	if typ != "page_view" {
		fmt.Fprintf(&b, `,"quantity":%d,"in_stock":%t`, 1+rng.Intn(4), rng.Intn(10) > 0)
	}
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, `,"ab_test":{"name":"checkout_redesign","variant":"%s"}`, variants[rng.Intn(len(variants))])
	}
	switch typ {
	case "search":
		fmt.Fprintf(&b, `,"query":"%s %s","results":%d`, adjectives[rng.Intn(len(adjectives))], nouns[rng.Intn(len(nouns))], rng.Intn(300))
	case "purchase", "checkout_started":
		fmt.Fprintf(&b, `,"order_id":"ord_%s","items":%d,"total":%d.%02d,"coupon":"%s"`, hexID(rng, 10), 1+rng.Intn(6), 10+rng.Intn(2000), rng.Intn(100), []string{"", "", "SPRING10", "FREESHIP"}[rng.Intn(4)])
	case "click":
		fmt.Fprintf(&b, `,"element":"%s","position":{"x":%d,"y":%d}`, []string{"buy_button", "thumbnail", "nav_link", "recommendation"}[rng.Intn(4)], rng.Intn(1920), rng.Intn(4000))
	}
	b.WriteString("}")
	if rng.Intn(3) > 0 {
		b.WriteString(`,"client":{"app_version":"` + strconv.Itoa(3+rng.Intn(2)) + "." + strconv.Itoa(rng.Intn(20)) + "." + strconv.Itoa(rng.Intn(10)) + `","sdk":"varve-js/1.4.2"}`)
	}
	b.WriteString("}")
	return []byte(strconv.Itoa(user)), b.Bytes()
}

// jsonSpecs returns about totalBytes of JSON events over the given number
// of partitions of one topic, like one ingest flush.
func jsonSpecs(seed int64, partitions int, totalBytes int) []blockSpec {
	rng := rand.New(rand.NewSource(seed))
	specs := make([]blockSpec, partitions)
	for p := range specs {
		specs[p] = blockSpec{topic: "clickstream", partition: int32(p)}
	}
	ts := int64(1772323200000) // 2026-03-01
	for n := 0; n < totalBytes; {
		ts += int64(rng.Intn(3))
		k, v := jsonEvent(rng, ts)
		r := Record{Key: k, Value: v, Timestamp: ts}
		if rng.Intn(10) < 3 {
			r.Headers = []Header{{Key: "traceparent", Value: []byte("00-" + hexID(rng, 32) + "-" + hexID(rng, 16) + "-01")}}
		}
		p := rng.Intn(partitions)
		specs[p].recs = append(specs[p].recs, r)
		n += EncodedSize(r)
	}
	return nonEmpty(specs)
}

// randomSpecs returns about totalBytes of incompressible records.
func randomSpecs(seed int64, partitions int, totalBytes int) []blockSpec {
	rng := rand.New(rand.NewSource(seed))
	specs := make([]blockSpec, partitions)
	for p := range specs {
		specs[p] = blockSpec{topic: "random", partition: int32(p)}
	}
	ts := int64(1772323200000)
	for n := 0; n < totalBytes; {
		k := make([]byte, 16)
		v := make([]byte, 300+rng.Intn(300))
		rng.Read(k)
		rng.Read(v)
		ts++
		r := Record{Key: k, Value: v, Timestamp: ts}
		p := rng.Intn(partitions)
		specs[p].recs = append(specs[p].recs, r)
		n += EncodedSize(r)
	}
	return nonEmpty(specs)
}

func nonEmpty(specs []blockSpec) []blockSpec {
	out := specs[:0]
	for _, s := range specs {
		if len(s.recs) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// builderRaw is a builder's uncompressed payload: the offset gaps of a
// sparse block, then the records.
func builderRaw(b *BlockBuilder) []byte {
	return append(append([]byte(nil), b.gaps...), b.buf...)
}
