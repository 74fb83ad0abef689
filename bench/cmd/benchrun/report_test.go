package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spooky/bench/load"
)

func TestMedian(t *testing.T) {
	runsOf := func(xs ...float64) []runResult {
		out := make([]runResult, len(xs))
		for i, x := range xs {
			out[i].res.RequestsPerSec = x
		}
		return out
	}
	rps := func(r runResult) float64 { return r.res.RequestsPerSec }
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"one", []float64{7}, 7},
		{"odd, unsorted", []float64{9, 1, 5}, 5},
		{"even: mean of the middle two", []float64{4, 1, 3, 10}, 3.5},
		{"NaNs ignored", []float64{math.NaN(), 2, 4, math.NaN(), 6}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(runsOf(tt.xs...), rps); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
			}
		})
	}
	if got := median(nil, rps); !math.IsNaN(got) {
		t.Errorf("median of nothing = %v, want NaN", got)
	}
	if got := median(runsOf(math.NaN()), rps); !math.IsNaN(got) {
		t.Errorf("median of only NaN = %v, want NaN", got)
	}
}

func TestCPUPerRequest(t *testing.T) {
	r := runResult{res: load.Result{Requests: 1000, Duration: 2 * time.Second}}
	// 50% of a core for 2s is 1s of CPU over 1000 requests: 1000µs each.
	if got := r.cpuPerRequest(load.Process{CPUPercent: 50}); math.Abs(got-1000) > 1e-9 {
		t.Errorf("cpuPerRequest = %v µs, want 1000", got)
	}
	r.res.Requests = 0
	if got := r.cpuPerRequest(load.Process{CPUPercent: 50}); !math.IsNaN(got) {
		t.Errorf("cpuPerRequest with no requests = %v, want NaN", got)
	}
}

// fakeRun makes a run whose figures are derived from rps, so that the
// median run is easy to tell.
func fakeRun(sc string, rep int, t target, rps float64, p99 time.Duration, errs int64) runResult {
	return runResult{
		scenario: sc, rep: rep, target: t,
		res: load.Result{
			Requests: int64(rps) * 5, Duration: 5 * time.Second, RequestsPerSec: rps,
			Latency:         load.Latency{P50: p99 / 2, P99: p99, Max: 2 * p99},
			BytesPerSec:     rps * (1 << 20),
			TransportErrors: errs,
		},
		// spooky uses 100% of a core: 1e6/rps µs per request.
		spookyProc:  load.Process{CPUPercent: 100, RSSBytes: int64(rps) << 20},
		backendProc: load.Process{CPUPercent: 50},
	}
}

func TestSummarize(t *testing.T) {
	large := scenario{name: "large", bulk: true}
	runs := []runResult{
		fakeRun("large", 1, direct, 100, 10*time.Millisecond, 0),
		fakeRun("large", 1, spooky, 50, 30*time.Millisecond, 1),
		fakeRun("large", 2, spooky, 40, 20*time.Millisecond, 0),
		fakeRun("large", 2, direct, 200, 40*time.Millisecond, 0),
		fakeRun("large", 3, direct, 80, 20*time.Millisecond, 2),
		fakeRun("large", 3, spooky, 60, 50*time.Millisecond, 0),
		fakeRun("other", 1, spooky, 1, time.Second, 100), // not this scenario
	}
	s := summarize(large, runs)
	check := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if s.reps != 3 {
		t.Errorf("reps = %d, want 3", s.reps)
	}
	check("directRPS", s.directRPS, 100)
	check("spookyRPS", s.spookyRPS, 50)
	// Paired ratios: 50/100, 40/200, 60/80.
	check("ratioMin", s.ratioMin, 0.2)
	check("ratioMax", s.ratioMax, 0.75)
	check("directP99", s.directP99, float64(20*time.Millisecond))
	check("spookyP99", s.spookyP99, float64(30*time.Millisecond))
	check("directBPS", s.directBPS, 100<<20)
	check("spookyBPS", s.spookyBPS, 50<<20)
	// 1s of CPU per second over 50 req/s: 20000µs per request.
	check("spookyCPU", s.spookyCPU, 20000)
	check("backendCPU", s.backendCPU, 5000)
	check("spookyRSS", s.spookyRSS, 50<<20)
	if s.directErrs != 2 || s.spookyErrs != 1 {
		t.Errorf("errors direct/spooky = %d/%d, want 2/1", s.directErrs, s.spookyErrs)
	}

	want := []string{"large", "100", "50", "0.50 (0.20–0.75)", "20ms", "30ms", "1.50",
		"100", "50", "0.50", "20000", "5000", "50 MiB", "2/1"}
	if got := s.row(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("row =\n%q\nwant\n%q", got, want)
	}
	if len(want) != len(summaryHeader) {
		t.Errorf("row has %d cells, header %d", len(want), len(summaryHeader))
	}
}

func TestSummaryRowSmallScenario(t *testing.T) {
	small := scenario{name: "small"}
	s := summarize(small, []runResult{
		fakeRun("small", 1, direct, 20000, 2*time.Millisecond, 0),
		fakeRun("small", 1, spooky, 10000, 5*time.Millisecond, 0),
	})
	row := s.row()
	// One repetition has no spread, and throughput is not the figure of a
	// small-body scenario.
	if row[3] != "0.50" {
		t.Errorf("ratio cell = %q, want 0.50", row[3])
	}
	for i := 7; i <= 9; i++ {
		if row[i] != dash {
			t.Errorf("%s = %q, want %s", summaryHeader[i], row[i], dash)
		}
	}
	if row[10] != "100" {
		t.Errorf("spooky CPU µs/req = %q, want 100", row[10])
	}
}

func TestSummarizeNoRuns(t *testing.T) {
	row := summarize(scenario{name: "none"}, nil).row()
	for i, cell := range row[1:13] {
		if cell != dash {
			t.Errorf("%s = %q, want %s", summaryHeader[i+1], cell, dash)
		}
	}
}

func TestFmtLatency(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                      dash,
		1234 * time.Nanosecond: "1µs",
		1234567:                "1.23ms",
		12345678:               "12.3ms",
		1234567890:             "1.23s",
	} {
		if got := fmtLatency(d); got != want {
			t.Errorf("fmtLatency(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	writeTable(&b, []string{"name", "µs"}, [][]string{{"a|b", "1"}, {"c", "12345"}})
	want := "" +
		"| name | µs    |\n" +
		"| ---- | ----- |\n" +
		"| a\\|b | 1     |\n" +
		"| c    | 12345 |\n"
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}

func testRecord() record {
	sc := scenario{name: "small-4x16"}
	runs := []runResult{
		fakeRun(sc.name, 1, direct, 20000, 2*time.Millisecond, 0),
		fakeRun(sc.name, 1, spooky, 10000, 5*time.Millisecond, 0),
	}
	return record{
		when:    time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		commit:  "abc1234-dirty",
		command: "bin/benchrun -reps 1",
		setup:   "1 rep(s) on a test",
		sums:    []summary{summarize(sc, runs)},
		runs:    runs,
	}
}

func TestRecordFormat(t *testing.T) {
	var b bytes.Buffer
	testRecord().write(&b)
	got := b.String()
	for _, want := range []string{
		"### 2026-03-04 05:06 UTC · abc1234-dirty\n\n`bin/benchrun -reps 1`  \n1 rep(s) on a test\n\n| scenario ",
		"\n| small-4x16 | 20000 ",
		"\n<details><summary>every run, in the order run</summary>\n\n| scenario ",
		"\n| small-4x16 | 1   | direct ",
		"\n| small-4x16 | 1   | spooky ",
		"\n</details>\n\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("record lacks %q; got:\n%s", want, got)
		}
	}
	if !strings.HasPrefix(got, "### ") || !strings.HasSuffix(got, "</details>\n\n") {
		t.Errorf("record does not start with its heading and end with a blank line:\n%s", got)
	}
}

func TestAppendRecord(t *testing.T) {
	rec := testRecord()
	var section bytes.Buffer
	rec.write(&section)

	t.Run("new file gets a preamble", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "RESULTS.md")
		if err := appendRecord(path, rec); err != nil {
			t.Fatal(err)
		}
		if err := appendRecord(path, rec); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if want := resultsPreamble + section.String() + section.String(); string(got) != want {
			t.Errorf("file =\n%s\nwant\n%s", got, want)
		}
	})
	for _, tt := range []struct{ name, before, sep string }{
		{"no final newline", "# results\n\ntext", "\n\n"},
		{"one final newline", "# results\n", "\n"},
		{"blank line", "# results\n\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "RESULTS.md")
			if err := os.WriteFile(path, []byte(tt.before), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := appendRecord(path, rec); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if want := tt.before + tt.sep + section.String(); string(got) != want {
				t.Errorf("file =\n%q\nwant\n%q", got, want)
			}
		})
	}
}
