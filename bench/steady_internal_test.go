package bench

import "testing"

func TestSteadyGrowthComparesATenthOfTheData(t *testing.T) {
	samples := []SteadySample{
		{Seconds: 10, IngestedBytes: 50, EtcdLiveBytes: 900},
		{Seconds: 20, IngestedBytes: 100, EtcdLiveBytes: 1000},
		{Seconds: 100, IngestedBytes: 500, EtcdLiveBytes: 1100},
		{Seconds: 200, IngestedBytes: 1000, EtcdLiveBytes: 1200},
	}
	g, ok := steadyGrowth(samples)
	if !ok || g.From.Seconds != 20 || g.Growth != 10 || g.LiveRatio != 1.2 {
		t.Fatalf("growth = %+v, %v; want from the 20 s sample, 10× data, 1.2× live", g, ok)
	}
	if _, ok := steadyGrowth(samples[:1]); ok {
		t.Fatal("one sample compared")
	}
}

// The nodes' histograms of one metric add up bucket by bucket; one with
// other buckets is left out rather than added wrongly.
func TestHistMerge(t *testing.T) {
	a := Hist{Count: 3, Sum: 0.3, Bounds: []float64{0.1, 1}, Counts: []float64{1, 3}}
	b := Hist{Count: 2, Sum: 1.5, Bounds: []float64{0.1, 1}, Counts: []float64{0, 1}}
	m := Hist{}.merge(a).merge(b)
	if m.Count != 5 || m.Sum != 1.8 || m.Counts[0] != 1 || m.Counts[1] != 4 {
		t.Fatalf("merged %+v", m)
	}
	if a.Counts[1] != 3 {
		t.Fatalf("merge changed its receiver: %+v", a)
	}
	if o := m.merge(Hist{Count: 9, Bounds: []float64{5}, Counts: []float64{9}}); o.Count != 5 {
		t.Fatalf("a histogram of other buckets was added: %+v", o)
	}
}
