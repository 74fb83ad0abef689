package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
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

func TestCPUPerMiB(t *testing.T) {
	r := runResult{res: load.Result{Requests: 10, BytesReceived: 20 << 20, Duration: 2 * time.Second}}
	// 50% of a core for 2s is 1s of CPU over 20 MiB: 50000µs each.
	if got := r.cpuPerMiB(load.Process{CPUPercent: 50}); math.Abs(got-50000) > 1e-9 {
		t.Errorf("cpuPerMiB = %v µs, want 50000", got)
	}
	r.res.BytesReceived = 0
	if got := r.cpuPerMiB(load.Process{CPUPercent: 50}); !math.IsNaN(got) {
		t.Errorf("cpuPerMiB with no bytes = %v, want NaN", got)
	}
}

func TestRSSPerStream(t *testing.T) {
	r := runResult{target: spooky, proxy: load.Process{IdleRSSBytes: 10 << 20, PeakRSSBytes: 20 << 20}}
	if got := r.rssPerStream(1024); got != 10<<10 {
		t.Errorf("rssPerStream = %v, want 10 KiB", got)
	}
	for name, r := range map[string]runResult{
		"direct":       {target: direct, proxy: r.proxy},
		"peak unknown": {target: caddy, proxy: load.Process{IdleRSSBytes: 10 << 20}},
	} {
		if got := r.rssPerStream(1024); !math.IsNaN(got) {
			t.Errorf("%s: rssPerStream = %v, want NaN", name, got)
		}
	}
}

// fakeRun makes a run whose figures are derived from rps, so that the
// median run is easy to tell: rps MiB/s of response bodies, the proxy
// (spooky or Caddy) busy on one full core and resident with rps MiB at
// the end, one more at its peak and 10 before the load, and the backend
// on half a core.
func fakeRun(sc string, rep int, t target, rps float64, p99 time.Duration, errs int64) runResult {
	requests := int64(rps) * 5
	r := runResult{
		scenario: sc, rep: rep, target: t,
		res: load.Result{
			Requests: requests, Duration: 5 * time.Second, RequestsPerSec: rps,
			Latency:         load.Latency{P50: p99 / 2, P99: p99, Max: 2 * p99},
			BytesReceived:   requests << 20,
			BytesPerSec:     rps * (1 << 20),
			TransportErrors: errs,
		},
		backend:     load.Process{CPUPercent: 50},
		backendPeak: 16,
	}
	if t != direct {
		r.proxy = load.Process{CPUPercent: 100, RSSBytes: int64(rps) << 20,
			IdleRSSBytes: 10 << 20, PeakRSSBytes: (int64(rps) + 1) << 20}
	}
	return r
}

// threeTargets are three repetitions of a bulk scenario in rotated order.
func threeTargets() (scenario, []runResult) {
	large := scenario{name: "large", conns: 4, streams: 4, bulk: true}
	ms := time.Millisecond
	return large, []runResult{
		fakeRun("large", 1, direct, 100, 10*ms, 0),
		fakeRun("large", 1, spooky, 50, 30*ms, 1),
		fakeRun("large", 1, caddy, 25, 60*ms, 0),
		fakeRun("large", 2, spooky, 40, 20*ms, 0),
		fakeRun("large", 2, caddy, 80, 10*ms, 3),
		fakeRun("large", 2, direct, 200, 40*ms, 0),
		fakeRun("large", 3, caddy, 40, 40*ms, 0),
		fakeRun("large", 3, direct, 80, 20*ms, 2),
		fakeRun("large", 3, spooky, 60, 50*ms, 0),
		fakeRun("other", 1, spooky, 1, time.Second, 100), // not this scenario
	}
}

func TestSummarize(t *testing.T) {
	sc, runs := threeTargets()
	s := summarize(sc, runs)
	check := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	d, sp, c := s.figures(direct), s.figures(spooky), s.figures(caddy)
	if d.runs != 3 || sp.runs != 3 || c.runs != 3 {
		t.Errorf("runs = %d/%d/%d, want 3 each", d.runs, sp.runs, c.runs)
	}
	check("direct rps", d.rps, 100)
	check("spooky rps", sp.rps, 50)
	check("caddy rps", c.rps, 40)
	// Paired by repetition: 50/100, 40/200, 60/80 and 50/25, 40/80, 60/40.
	check("vsDirect.min", s.vsDirect.min, 0.2)
	check("vsDirect.max", s.vsDirect.max, 0.75)
	check("vsCaddy.min", s.vsCaddy.min, 0.5)
	check("vsCaddy.max", s.vsCaddy.max, 2)
	check("direct p99", d.p99, float64(20*time.Millisecond))
	check("spooky p99", sp.p99, float64(30*time.Millisecond))
	check("caddy p99", c.p99, float64(40*time.Millisecond))
	check("spooky bps", sp.bps, 50<<20)
	// One core over 50 req/s (and 50 MiB/s) is 20000µs per request and per MiB.
	check("spooky cpu", sp.cpu, 20000)
	check("spooky cpu/MiB", sp.cpuMiB, 20000)
	check("caddy cpu", c.cpu, 25000)
	check("caddy cpu/MiB", c.cpuMiB, 25000)
	check("direct backend cpu", d.backendCPU, 5000)
	check("spooky peak RSS", sp.peakRSS, 51<<20)
	check("caddy peak RSS", c.peakRSS, 41<<20)
	check("spooky idle RSS", sp.idleRSS, 10<<20)
	if !math.IsNaN(d.cpu) || !math.IsNaN(d.peakRSS) {
		t.Errorf("direct has proxy figures: cpu %v, peak RSS %v", d.cpu, d.peakRSS)
	}
	if d.errs != 2 || sp.errs != 1 || c.errs != 3 {
		t.Errorf("errors = %d/%d/%d, want 2/1/3", d.errs, sp.errs, c.errs)
	}
}

// tableOf renders one summary in cols and returns the header and the row.
func tableOf(cols []column, caddyRan bool, s summary) (header, row []string) {
	header, rows := table(cols, caddyRan, []summary{s})
	return header, rows[0]
}

func TestThroughputTable(t *testing.T) {
	sc, runs := threeTargets()
	s := summarize(sc, runs)
	tests := []struct {
		name     string
		caddyRan bool
		want     [][2]string // header, cell
	}{
		{"with Caddy", true, [][2]string{
			{"scenario", "large"},
			{"direct req/s", "100"},
			{"spooky req/s", "50"},
			{"caddy req/s", "40"},
			{"spooky/direct (min–max)", "0.50 (0.20–0.75)"},
			{"spooky/caddy (min–max)", "1.25 (0.50–2.00)"},
			{"p99 direct", "20ms"},
			{"p99 spooky", "30ms"},
			{"p99 caddy", "40ms"},
			{"p99 spooky/direct", "1.50"},
			{"p99 spooky/caddy", "0.75"},
			{"MiB/s direct", "100"},
			{"MiB/s spooky", "50"},
			{"MiB/s caddy", "40"},
			{"MiB/s spooky/direct", "0.50"},
			{"MiB/s spooky/caddy", "1.25"},
			{"spooky CPU µs/req", "20000"},
			{"caddy CPU µs/req", "25000"},
			{"spooky CPU µs/MiB", "20000"},
			{"caddy CPU µs/MiB", "25000"},
			{"backend CPU µs/req (direct)", "5000"},
			{"spooky peak RSS", "51 MiB"},
			{"caddy peak RSS", "41 MiB"},
			{"errors direct/spooky/caddy", "2/1/3"},
		}},
		// Without Caddy its columns go, and the errors column says so.
		{"without Caddy", false, [][2]string{
			{"scenario", "large"},
			{"direct req/s", "100"},
			{"spooky req/s", "50"},
			{"spooky/direct (min–max)", "0.50 (0.20–0.75)"},
			{"p99 direct", "20ms"},
			{"p99 spooky", "30ms"},
			{"p99 spooky/direct", "1.50"},
			{"MiB/s direct", "100"},
			{"MiB/s spooky", "50"},
			{"MiB/s spooky/direct", "0.50"},
			{"spooky CPU µs/req", "20000"},
			{"spooky CPU µs/MiB", "20000"},
			{"backend CPU µs/req (direct)", "5000"},
			{"spooky peak RSS", "51 MiB"},
			{"errors direct/spooky", "2/1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, row := tableOf(throughputColumns, tt.caddyRan, s)
			if len(header) != len(tt.want) || len(row) != len(header) {
				t.Fatalf("%d columns (%d cells), want %d:\n%q", len(header), len(row), len(tt.want), header)
			}
			for i, w := range tt.want {
				if header[i] != w[0] || row[i] != w[1] {
					t.Errorf("column %d = %q: %q, want %q: %q", i, header[i], row[i], w[0], w[1])
				}
			}
		})
	}
}

func TestThroughputTableSmallScenario(t *testing.T) {
	small := scenario{name: "small", conns: 4, streams: 16}
	s := summarize(small, []runResult{
		fakeRun("small", 1, direct, 20000, 2*time.Millisecond, 0),
		fakeRun("small", 1, spooky, 10000, 5*time.Millisecond, 0),
		fakeRun("small", 1, caddy, 8000, 4*time.Millisecond, 0),
	})
	header, row := tableOf(throughputColumns, true, s)
	cell := func(head string) string {
		i := slices.Index(header, head)
		if i < 0 {
			t.Fatalf("no column %q", head)
		}
		return row[i]
	}
	// One repetition has no spread.
	if got := cell("spooky/direct (min–max)"); got != "0.50" {
		t.Errorf("spooky/direct = %q, want 0.50", got)
	}
	if got := cell("spooky/caddy (min–max)"); got != "1.25" {
		t.Errorf("spooky/caddy = %q, want 1.25", got)
	}
	// Bytes per second are not the figure of a small-body scenario.
	for _, head := range []string{"MiB/s direct", "MiB/s spooky", "MiB/s caddy", "MiB/s spooky/direct",
		"MiB/s spooky/caddy", "spooky CPU µs/MiB", "caddy CPU µs/MiB"} {
		if got := cell(head); got != dash {
			t.Errorf("%s = %q, want %s", head, got, dash)
		}
	}
	if got := cell("spooky CPU µs/req"); got != "100" {
		t.Errorf("spooky CPU µs/req = %q, want 100", got)
	}
	if got := cell("caddy CPU µs/req"); got != "125" {
		t.Errorf("caddy CPU µs/req = %q, want 125", got)
	}
}

func TestThroughputTableNoRuns(t *testing.T) {
	header, row := tableOf(throughputColumns, true, summarize(scenario{name: "none", bulk: true}, nil))
	for i, cell := range row {
		switch {
		case i == 0 || strings.HasPrefix(header[i], "errors"):
		case cell != dash:
			t.Errorf("%s = %q, want %s", header[i], cell, dash)
		}
	}
}

// memoryRun is a run of a memory scenario: the proxy resident with idle
// MiB before the load and peak MiB at its peak.
func memoryRun(rep int, t target, idle, peak int64, allHeld time.Duration) runResult {
	return runResult{
		scenario: "mem", rep: rep, target: t,
		res:         load.Result{Duration: 5 * time.Second},
		proxy:       load.Process{IdleRSSBytes: idle << 20, PeakRSSBytes: peak << 20, RSSBytes: peak << 20},
		backendPeak: 1000,
		allHeld:     allHeld,
	}
}

func TestMemoryTable(t *testing.T) {
	mem := scenario{name: "mem", conns: 10, streams: 100, memory: true}
	ms := time.Millisecond
	s := summarize(mem, []runResult{
		memoryRun(1, spooky, 20, 40, 150*ms),
		memoryRun(1, caddy, 35, 70, 200*ms),
		memoryRun(2, caddy, 35, 71, -1),
		memoryRun(2, spooky, 21, 41, 170*ms),
		memoryRun(3, spooky, 19, 39, 130*ms),
		memoryRun(3, caddy, 36, 69, 300*ms),
	})
	tests := []struct {
		name     string
		caddyRan bool
		want     [][2]string
	}{
		{"with Caddy", true, [][2]string{
			{"scenario", "mem"},
			{"streams", "1000"},
			{"held at once via spooky", "1000"},
			{"held at once via caddy", "1000"},
			{"all held after, spooky", "150ms"},
			// The median of the runs that got there, and how many did not.
			{"all held after, caddy", "250ms (1 never)"},
			{"spooky RSS idle", "20.0 MiB"},
			{"spooky RSS peak", "40.0 MiB"},
			// 20 MiB over 1000 streams.
			{"spooky KiB/stream", "20.5"},
			{"caddy RSS idle", "35.0 MiB"},
			{"caddy RSS peak", "70.0 MiB"},
			{"caddy KiB/stream", "35.8"},
			{"KiB/stream spooky/caddy", "0.57"},
			{"errors spooky/caddy", "0/0"},
		}},
		{"without Caddy", false, [][2]string{
			{"scenario", "mem"},
			{"streams", "1000"},
			{"held at once via spooky", "1000"},
			{"all held after, spooky", "150ms"},
			{"spooky RSS idle", "20.0 MiB"},
			{"spooky RSS peak", "40.0 MiB"},
			{"spooky KiB/stream", "20.5"},
			{"errors spooky", "0"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, row := tableOf(memoryColumns, tt.caddyRan, s)
			if len(header) != len(tt.want) || len(row) != len(header) {
				t.Fatalf("%d columns (%d cells), want %d:\n%q", len(header), len(row), len(tt.want), header)
			}
			for i, w := range tt.want {
				if header[i] != w[0] || row[i] != w[1] {
					t.Errorf("column %d = %q: %q, want %q: %q", i, header[i], row[i], w[0], w[1])
				}
			}
		})
	}
}

func TestFmtAllHeld(t *testing.T) {
	nan := math.NaN()
	for _, tt := range []struct {
		f    figures
		want string
	}{
		{figures{allHeld: float64(1500 * time.Millisecond)}, "1.5s"},
		{figures{allHeld: nan}, dash},
		{figures{allHeld: nan, neverHeld: 2}, "never"},
		{figures{allHeld: float64(2 * time.Second), neverHeld: 1}, "2s (1 never)"},
	} {
		if got := fmtAllHeld(tt.f); got != tt.want {
			t.Errorf("fmtAllHeld(%v, %d never) = %q, want %q", tt.f.allHeld, tt.f.neverHeld, got, tt.want)
		}
	}
}

func TestRunRow(t *testing.T) {
	proxied := fakeRun("small", 2, caddy, 1000, 4*time.Millisecond, 0)
	proxied.res.FirstError = "stream reset"
	proxied.res.TransportErrors = 3
	mem := memoryRun(1, spooky, 20, 40, -1)
	mem.res.Requests = 0
	for _, tt := range []struct {
		name string
		r    runResult
		want []string
	}{
		{"direct", fakeRun("small", 1, direct, 2000, 2*time.Millisecond, 0), []string{
			"small", "1", "direct", "2000", "1ms", "2ms", "4ms", "2000", "0",
			dash, dash, dash, dash, "250", "16", dash}},
		{"proxied", proxied, []string{
			"small", "2", "caddy", "1000", "2ms", "4ms", "8ms", "1000", "3 (stream reset)",
			"1000", "10 MiB", "1001 MiB", "1000 MiB", "500", "16", dash}},
		{"memory, never all held", mem, []string{
			"mem", "1", "spooky", "0", dash, dash, dash, "0", "0",
			dash, "20 MiB", "40 MiB", "40 MiB", dash, "1000", "never"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.row()
			if !slices.Equal(got, tt.want) {
				t.Errorf("row =\n%q\nwant\n%q", got, tt.want)
			}
			if len(got) != len(runHeader) {
				t.Errorf("row has %d cells, header %d", len(got), len(runHeader))
			}
		})
	}
}

func TestWriteSummaries(t *testing.T) {
	sc, runs := threeTargets()
	mem := scenario{name: "mem", conns: 10, streams: 100, memory: true}
	runs = append(runs, memoryRun(1, spooky, 20, 40, time.Second), memoryRun(1, caddy, 30, 60, time.Second))
	var b bytes.Buffer
	writeSummaries(&b, true, []summary{summarize(sc, runs), summarize(mem, runs)})
	tables := strings.Split(b.String(), "\n\n")
	if len(tables) != 2 {
		t.Fatalf("want a throughput and a memory table apart, got:\n%s", b.String())
	}
	if !strings.HasPrefix(tables[0], "| scenario | direct req/s ") || !strings.Contains(tables[0], "\n| large ") {
		t.Errorf("throughput table:\n%s", tables[0])
	}
	if !strings.HasPrefix(tables[1], "| scenario | streams ") || !strings.Contains(tables[1], "\n| mem ") ||
		strings.Contains(tables[1], "large") {
		t.Errorf("memory table:\n%s", tables[1])
	}

	b.Reset()
	writeSummaries(&b, false, []summary{summarize(mem, runs)})
	if got := b.String(); strings.Count(got, "\n") != 3 || strings.Contains(got, "caddy") {
		t.Errorf("memory only, without Caddy:\n%s", got)
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
		fakeRun(sc.name, 1, caddy, 8000, 4*time.Millisecond, 0),
	}
	return record{
		when:     time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		commit:   "abc1234-dirty",
		command:  "bin/benchrun -reps 1",
		setup:    "1 rep(s) on a test",
		caddyRan: true,
		sums:     []summary{summarize(sc, runs)},
		runs:     runs,
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
		"\n| small-4x16 | 1   | caddy  ",
		"| caddy req/s |",
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
