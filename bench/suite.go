package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/varve-io/varve/sdk"
)

// Config is one `varve bench` run.
type Config struct {
	Profile Profile
	// VarveBin is the varve binary the targets run (varve bench passes
	// itself).
	VarveBin string
	// Dir is scratch space for the targets' data, removed by the caller.
	Dir string
	// Command is the command line, recorded in the report.
	Command  string
	Progress Progress
	// Log receives one line per step (nil: discarded).
	Log func(format string, args ...any)
	// Rounds runs every target this many times, in turn: round 1 runs
	// each target, then round 2 each again, so targets whose figures are
	// divided (two nodes over one) ran alternately, not one after the
	// other. The floor and start-up are measured in round 1 only.
	// 0 means 1.
	Rounds int
}

// Report is everything one run measured. It is written as JSON and Markdown.
type Report struct {
	Profile  string    `json:"profile"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Settings Profile   `json:"settings"`
	// Rounds is how many times every target ran (Config.Rounds); a
	// result of round 2 or later says its round.
	Rounds int `json:"rounds,omitempty"`

	Results []*WorkloadResult `json:"results"`
	Floors  []*Floor          `json:"floors"`
	// Ratios are Varve's figures over the floor of the same target, keyed
	// "target/workload".
	Ratios  map[string]Ratios `json:"ratios"`
	Startup []*Startup        `json:"startup,omitempty"`
	Errors  []string          `json:"errors,omitempty"`
}

// Ratios compare a Varve workload with its floor. Throughput ratios are
// fractions of what the floor allows (higher is better); latency ratios
// are multiples of the floor's latency (lower is better).
type Ratios struct {
	ThroughputVsZstd float64 `json:"throughput_vs_zstd"`
	ThroughputVsPut  float64 `json:"throughput_vs_put"`
	AckP50VsFloor    float64 `json:"ack_p50_vs_floor"`
	AckP99VsFloor    float64 `json:"ack_p99_vs_floor"`
	E2EP50VsFloor    float64 `json:"e2e_p50_vs_floor"`
	CatchUpVsFloor   float64 `json:"catch_up_vs_floor"`
	CPUPerMiB        float64 `json:"cpu_s_per_mib"`
}

// HigherIsBetter tells, per ratio name, which direction is a regression.
var HigherIsBetter = map[string]bool{
	"throughput_vs_zstd": true, "throughput_vs_put": true, "catch_up_vs_floor": true,
	"ack_p50_vs_floor": false, "ack_p99_vs_floor": false, "e2e_p50_vs_floor": false, "cpu_s_per_mib": false,
}

// Map returns the ratios by name.
func (r Ratios) Map() map[string]float64 {
	return map[string]float64{
		"throughput_vs_zstd": r.ThroughputVsZstd, "throughput_vs_put": r.ThroughputVsPut,
		"ack_p50_vs_floor": r.AckP50VsFloor, "ack_p99_vs_floor": r.AckP99VsFloor,
		"e2e_p50_vs_floor": r.E2EP50VsFloor, "catch_up_vs_floor": r.CatchUpVsFloor, "cpu_s_per_mib": r.CPUPerMiB,
	}
}

// Machine describes where a run happened.
type Machine struct {
	Cores     int    `json:"cores"`
	MemBytes  int64  `json:"mem_bytes"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel"`
	LoadAvg   string `json:"load_avg_at_start"`
}

// ThisMachine describes the machine from /proc.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				m.MemBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// Run runs the profile against each of its targets in turn: start, the
// floor (Varve targets), every workload, start-to-first-ack and drain
// (varve-minio-1), stop; all of it Config.Rounds times. A failing target is
// reported and the run goes on.
func Run(ctx context.Context, c Config) (*Report, error) {
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	if c.Progress == nil {
		c.Progress = func(float64, string) {}
	}
	p := c.Profile
	rounds := max(c.Rounds, 1)
	rep := &Report{Profile: p.Name, Command: c.Command, Machine: ThisMachine(), Started: time.Now().UTC(),
		Settings: p, Ratios: map[string]Ratios{}}
	if rounds > 1 {
		rep.Rounds = rounds
	}
	steps := float64(rounds * len(p.Targets) * (len(p.Workloads) + 1))
	step := 0.0
	floors := map[string]*Floor{}
	for round := 1; round <= rounds; round++ {
		for _, name := range p.Targets {
			label, dir := roundLabel(name, round), c.Dir
			if round > 1 {
				// A fresh directory: a target's store and etcd from
				// the round before must not be found again.
				dir = filepath.Join(c.Dir, fmt.Sprintf("round-%d", round))
			}
			t, err := NewTarget(name)
			if err != nil {
				return nil, err
			}
			c.Log("%s: starting", label)
			c.Progress(step/steps, label+" start")
			if err := t.Start(ctx, Env{VarveBin: c.VarveBin, Dir: dir, FlushBytes: p.FlushBytes, NodeSettings: p.NodeSettings, Compact: p.Compact}); err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", label, err))
				step += float64(len(p.Workloads) + 1)
				continue
			}
			if vt, ok := t.(VarveTarget); ok && len(p.Workloads) > 0 && round == 1 {
				c.Log("%s: measuring the floor", name)
				c.Progress(step/steps, name+" floor")
				flush := p.FlushBytes
				if flush == 0 {
					flush = 8 << 20
				}
				floor, err := MeasureFloor(ctx, vt, p.Workloads, flush, p.FloorObjects, p.FloorCommits)
				if err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("%s floor: %v", name, err))
				} else {
					rep.Floors = append(rep.Floors, floor)
					floors[name] = floor
				}
			}
			step++
			for _, w := range p.Workloads {
				c.Log("%s: workload %s", label, w.Name)
				base := step
				res, err := RunWorkload(ctx, t, w, func(f float64, what string) { c.Progress((base+f)/steps, what) })
				step++
				if err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("%s %s: %v", label, w.Name, err))
				}
				if res == nil {
					continue
				}
				if round > 1 {
					res.Round = round
				}
				rep.Results = append(rep.Results, res)
				if floor := floors[name]; floor != nil {
					rep.Ratios[res.Label()+"/"+w.Name] = ratios(res, floor, floor.zstdFor(w))
				}
			}
			if m, ok := t.(*VarveMinIO); ok && m.Nodes == 1 && p.StartupRounds > 0 && round == 1 {
				c.Log("%s: start-to-first-ack and drain", name)
				c.Progress(step/steps, name+" startup")
				s, err := MeasureStartup(ctx, m, p.StartupRounds)
				if err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("%s startup: %v", name, err))
				} else {
					rep.Startup = append(rep.Startup, s)
				}
			}
			t.Stop()
		}
	}
	c.Progress(1, "done")
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, nil
}

func ratios(r *WorkloadResult, f *Floor, z ZstdFloor) Ratios {
	var q Ratios
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	q.ThroughputVsZstd = div(r.MiBps, z.CompressMiBs)
	// The store takes compressed bytes: raw MiB/s it could absorb is PUT
	// bandwidth times the compression ratio.
	q.ThroughputVsPut = div(r.MiBps, f.PutMiBs*z.Ratio)
	lat := f.Put.P50 + f.Commit.P50
	q.AckP50VsFloor = div(r.Ack.P50, lat)
	q.AckP99VsFloor = div(r.Ack.P99, f.Put.P99+f.Commit.P99)
	q.E2EP50VsFloor = div(r.EndToEnd.P50, lat)
	q.CatchUpVsFloor = div(r.CatchUpMiB, min(f.GetMiBs*z.Ratio, z.DecompressMiBs))
	cpu, _ := serverCPU(r.Processes)
	q.CPUPerMiB = div(cpu, float64(r.Bytes)/(1<<20))
	return q
}

// Startup is the serverless readiness of an ingest node.
type Startup struct {
	Target string `json:"target"`
	// FirstAckMs is, per round, the time from starting `varve serve --roles
	// ingest` to its first acknowledged produce.
	FirstAckMs []float64 `json:"start_to_first_ack_ms"`
	// DrainMs is, per round, the time from SIGTERM (with a produce in
	// flight) to the process's exit.
	DrainMs []float64 `json:"drain_ms"`
}

// MeasureStartup starts rounds extra ingest-only nodes on t's etcd and
// bucket, one at a time, timing each from exec to its first acknowledged
// produce, then from SIGTERM to exit.
func MeasureStartup(ctx context.Context, t *VarveMinIO, rounds int) (*Startup, error) {
	topic := fmt.Sprintf("startup-%d", time.Now().UnixNano()%1e9)
	if err := t.CreateTopic(ctx, topic, 1); err != nil {
		return nil, err
	}
	s := &Startup{Target: t.Name()}
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		p, addr, err := t.StartNode(ctx, fmt.Sprintf("startup-%d", i), "ingest")
		if err != nil {
			return nil, err
		}
		c := sdk.New(addr, t.opts...)
		deadline := t0.Add(30 * time.Second)
		var lastErr error
		for {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := c.Produce(actx, topic, []sdk.Record{{Partition: 0, Value: []byte("first")}})
			cancel()
			if err == nil {
				break
			}
			lastErr = err
			if p.Exited() || time.Now().After(deadline) {
				c.Close()
				p.Stop(time.Second)
				return nil, fmt.Errorf("startup round %d: no ack: %v\n%s", i, lastErr, p.LogTail())
			}
			time.Sleep(2 * time.Millisecond)
		}
		s.FirstAckMs = append(s.FirstAckMs, float64(time.Since(t0).Microseconds())/1000)
		// A produce in flight when the node is told to stop: the drain
		// must answer it.
		inflight := make(chan error, 1)
		go func() {
			_, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 0, Value: []byte("draining")}})
			inflight <- err
		}()
		time.Sleep(5 * time.Millisecond)
		d := p.Stop(30 * time.Second)
		s.DrainMs = append(s.DrainMs, float64(d.Microseconds())/1000)
		<-inflight
		c.Close()
	}
	return s, nil
}
