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
