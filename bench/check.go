package bench

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
)

// Regression is one ratio that got worse than the baseline by more than the
// tolerance.
type Regression struct {
	Key      string  `json:"key"` // target/workload
	Ratio    string  `json:"ratio"`
	Baseline float64 `json:"baseline"`
	Current  float64 `json:"current"`
	// Change is current/baseline.
	Change float64 `json:"change"`
}

// Check compares the floor ratios of current against baseline. A ratio
// that is better the higher regresses when current < baseline×(1−tol); one
// that is better the lower, when current > baseline×(1+tol). Ratios to the
// floor, not absolute figures, are compared, so a slower or busier machine
// does not count as a regression. It writes a table to w and returns the
// regressions, and an error if nothing could be compared.
func Check(w io.Writer, baseline, current *Report, tol float64) ([]Regression, error) {
	keys := make([]string, 0, len(baseline.Ratios))
	for k := range baseline.Ratios {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	names := make([]string, 0, len(HigherIsBetter))
	for n := range HigherIsBetter {
		names = append(names, n)
	}
	slices.Sort(names)
	var regs []Regression
	compared := 0
	fmt.Fprintf(w, "| target/workload | ratio | baseline | current | current ÷ baseline | verdict |\n|---|---|---|---|---|---|\n")
	for _, k := range keys {
		cur, ok := current.Ratios[k]
		if r := keyRound(k); !ok && r > max(current.Rounds, 1) {
			// A later round of a baseline run with more rounds than this
			// one: nothing to compare, not a regression.
			fmt.Fprintf(w, "| %s | — | | | | round %d not run (the current run has %d) |\n", k, r, max(current.Rounds, 1))
			continue
		}
		if !ok {
			fmt.Fprintf(w, "| %s | — | | | | missing from the current run |\n", k)
			regs = append(regs, Regression{Key: k, Ratio: "missing"})
			continue
		}
		b, c := baseline.Ratios[k].Map(), cur.Map()
		for _, n := range names {
			if b[n] == 0 || c[n] == 0 {
				continue
			}
			compared++
			ch := c[n] / b[n]
			bad := ch < 1-tol
			if !HigherIsBetter[n] {
				bad = ch > 1+tol
			}
			verdict := "ok"
			if bad {
				verdict = "REGRESSION"
				regs = append(regs, Regression{Key: k, Ratio: n, Baseline: b[n], Current: c[n], Change: ch})
			}
			fmt.Fprintf(w, "| %s | %s | %.4g | %.4g | %.2f | %s |\n", k, n, b[n], c[n], ch, verdict)
		}
	}
	for _, e := range current.Errors {
		fmt.Fprintf(w, "\ncurrent run error: %s\n", e)
	}
	if compared == 0 {
		return regs, fmt.Errorf("no ratio in common between the baseline (profile %s) and the current run (profile %s)", baseline.Profile, current.Profile)
	}
	return regs, nil
}

// roundKey matches the round in a ratio key of a run with several rounds
// ("varve-minio-2 #3/scale-8p", roundLabel).
var roundKey = regexp.MustCompile(` #([0-9]+)/`)

// keyRound returns the round a ratio key belongs to (1 without a mark).
func keyRound(k string) int {
	if m := roundKey.FindStringSubmatch(k); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return n
		}
	}
	return 1
}
