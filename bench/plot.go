package bench

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plots writes PNG plots into dir and returns their file names: per
// workload the ack and end-to-end latency CDFs and throughput over time,
// and per-target comparison bars of throughput and latency.
func (r *Report) Plots(dir string) ([]string, error) {
	var files []string
	for _, wl := range r.Settings.Workloads {
		var res []*WorkloadResult
		for _, x := range r.Results {
			if x.Workload.Name == wl.Name {
				res = append(res, x)
			}
		}
		if len(res) == 0 {
			continue
		}
		for _, kind := range []string{"ack", "e2e"} {
			p := plot.New()
			p.Title.Text = fmt.Sprintf("%s: %s latency CDF", wl.Name, kind)
			p.X.Label.Text = "percentile (nines: 1 = 90%, 2 = 99%, 3 = 99.9%)"
			p.Y.Label.Text = "ms"
			var args []any
			for _, x := range res {
				l := x.Ack
				if kind == "e2e" {
					l = x.EndToEnd
				}
				var xys plotter.XYs
				for _, pt := range l.CDF {
					q := pt[0]
					if q >= 100 {
						q = 99.999
					}
					xys = append(xys, plotter.XY{X: -math.Log10(1 - q/100), Y: pt[1]})
				}
				if len(xys) > 0 {
					args = append(args, x.Label(), xys)
				}
			}
			if len(args) == 0 {
				continue
			}
			if err := plotutil.AddLinePoints(p, args...); err != nil {
				return nil, err
			}
			p.Legend.Top, p.Legend.Left = true, true
			name := fmt.Sprintf("%s-%s-latency-cdf.png", wl.Name, kind)
			if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			files = append(files, name)
		}
		p := plot.New()
		p.Title.Text = wl.Name + ": acknowledged MiB/s over time"
		p.X.Label.Text = "second of the measured window"
		p.Y.Label.Text = "MiB/s"
		var args []any
		for _, x := range res {
			var xys plotter.XYs
			for i, v := range x.PerSecond {
				xys = append(xys, plotter.XY{X: float64(i), Y: v})
			}
			if len(xys) > 0 {
				args = append(args, x.Label(), xys)
			}
		}
		if err := plotutil.AddLines(p, args...); err != nil {
			return nil, err
		}
		name := wl.Name + "-throughput.png"
		if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, name)); err != nil {
			return nil, err
		}
		files = append(files, name)
	}
	// Comparison bars: one group per workload, one bar per target.
	for _, m := range []struct {
		file, title, unit string
		v                 func(*WorkloadResult) float64
	}{
		{"compare-throughput.png", "produce throughput per target", "MiB/s", func(x *WorkloadResult) float64 { return x.MiBps }},
		{"compare-ack-p99.png", "produce-ack latency p99 per target", "ms", func(x *WorkloadResult) float64 { return x.Ack.P99 }},
		{"compare-e2e-p50.png", "end-to-end latency p50 per target", "ms", func(x *WorkloadResult) float64 { return x.EndToEnd.P50 }},
	} {
		var targets []string
		for _, x := range r.Results {
			if !contains(targets, x.Label()) {
				targets = append(targets, x.Label())
			}
		}
		var wls []string
		for _, wl := range r.Settings.Workloads {
			wls = append(wls, wl.Name)
		}
		if len(targets) == 0 {
			continue
		}
		p := plot.New()
		p.Title.Text = m.title
		p.Y.Label.Text = m.unit
		w := vg.Points(float64(60) / float64(len(targets)))
		for i, t := range targets {
			vals := make(plotter.Values, len(wls))
			for j, wl := range wls {
				for _, x := range r.Results {
					if x.Label() == t && x.Workload.Name == wl {
						vals[j] = m.v(x)
					}
				}
			}
			b, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return nil, err
			}
			b.Color = plotutil.Color(i)
			b.LineStyle.Width = 0
			b.Offset = w * vg.Length(float64(i)-float64(len(targets)-1)/2)
			p.Add(b)
			p.Legend.Add(t, b)
		}
		p.Legend.Top = true
		p.NominalX(wls...)
		if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, m.file)); err != nil {
			return nil, err
		}
		files = append(files, m.file)
	}
	return files, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
