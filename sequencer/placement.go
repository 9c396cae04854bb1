package sequencer

import (
	"context"
	"time"
)

// DefaultWriterBytes is Config.WriterBytes's default: 8 MiB of records a
// second per writer, about a flush_bytes object a second at the default
// flush_bytes, or 0.8 MiB objects at the default 100 ms linger.
const DefaultWriterBytes = 8 << 20

const (
	// placementEvery is how often the leader measures the produce rate.
	placementEvery = time.Second
	// placementWindow is the span the rate is measured over, and
	// placementMinSpan the least of it a new leader waits for before it
	// decides.
	placementWindow  = 10 * time.Second
	placementMinSpan = 2 * time.Second
	// placementShrinkAfter is how long the rate must stay below what
	// fewer writers take before the leader asks for fewer: more writers
	// are asked for at once, fewer only when the load stays low, so a
	// pause between bursts does not move the producers back and forth.
	placementShrinkAfter = 30 * time.Second
)

// placement decides how many ingest nodes take the producers
// (docs/metadata.md, "Producer placement"): ceil(produce rate / per
// writer), at least one, from the bytes the leader's batches committed.
type placement struct {
	per     int64
	samples []placementSample
	writers int
	low     time.Time // since when fewer writers would do; zero: not
}

type placementSample struct {
	at    time.Time
	bytes int64
}

// observe records that total bytes were committed by now and returns the
// writers to ask for, and whether that is a change (always, for the
// first decision).
func (p *placement) observe(now time.Time, total int64) (writers int, changed bool) {
	p.samples = append(p.samples, placementSample{now, total})
	for len(p.samples) > 1 && now.Sub(p.samples[1].at) >= placementWindow {
		p.samples = p.samples[1:]
	}
	first := p.samples[0]
	span := now.Sub(first.at)
	if span < placementMinSpan {
		return p.writers, false
	}
	rate := float64(total-first.bytes) / span.Seconds()
	need := max(1, int((rate+float64(p.per)-1)/float64(p.per)))
	switch {
	case p.writers == 0 || need > p.writers:
		p.writers, p.low = need, time.Time{}
		return need, true
	case need == p.writers:
		p.low = time.Time{}
	case p.low.IsZero():
		p.low = now
	case now.Sub(p.low) >= placementShrinkAfter:
		p.writers, p.low = need, time.Time{}
		return need, true
	}
	return p.writers, false
}

// place runs while tm is served: it measures the bytes tm's batches
// commit and records the writers to ask for when that changes. With
// WriterBytes negative it clears the record once: every ingest node keeps
// the producers that reach it.
func (s *Sequencer) place(ctx context.Context, tm *term) {
	if s.meta == nil {
		return
	}
	if s.cfg.WriterBytes < 0 {
		if n, err := s.meta.Writers(ctx); err != nil || n > 0 {
			if err := s.meta.SetWriters(ctx, 0); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("sequencer: writers not cleared", "err", err)
			}
		}
		return
	}
	p := &placement{per: s.cfg.WriterBytes}
	// A first leader asks for one writer at once (the least it ever asks
	// for); a later one keeps its predecessor's number until it measured.
	if n, err := s.meta.Writers(ctx); err == nil && n == 0 {
		if err := s.meta.SetWriters(ctx, 1); err == nil {
			p.writers = 1
		}
	}
	t := time.NewTicker(placementEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tm.done:
			return
		case now := <-t.C:
			n, changed := p.observe(now, tm.bytes.Load())
			if !changed {
				continue
			}
			if err := s.meta.SetWriters(ctx, n); err != nil {
				p.writers = 0 // decide and write again next time
				if ctx.Err() == nil {
					s.cfg.Logger.Warn("sequencer: writers not recorded", "writers", n, "err", err)
				}
				continue
			}
			s.cfg.Logger.Info("sequencer: producers placed", "writers", n, "per_writer_bytes", p.per)
		}
	}
}

// committedBytes adds up the records' bytes of a batch's commits of
// ingest nodes' flushes: placement follows the produce load, and a commit
// that is not a flush (a tool's, the bench's floor) is none.
func committedBytes(batch []*request) int64 {
	var n int64
	for _, r := range batch {
		if r.source == "" {
			continue
		}
		for _, a := range r.appends {
			n += a.RawBytes
		}
	}
	return n
}
