package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"spooky/bench/load"
)

// target names where a run sends its load.
type target string

const (
	direct target = "direct" // the backend's own HTTP/3 server, no proxy
	spooky target = "spooky" // spooky's HTTP/3 listener, to the backend over h2c
	caddy  target = "caddy"  // Caddy's HTTP/3 listener, to the backend over h2c
)

// runResult is one load generator run and the resource use of the server
// processes over its measured window.
type runResult struct {
	scenario string
	rep      int // from 1
	target   target
	res      load.Result
	// proxy is the CPU and memory of the proxy the run went through
	// (spooky or Caddy), zero in a direct run; backend is the backend's.
	proxy, backend load.Process
	// backendPeak is the most requests the backend served at once during
	// the run, warm-up included (its /inflight count).
	backendPeak int64
	// allHeld is, in a memory run, how long after the load generator
	// started the backend held every stream at once; -1 if it never did,
	// zero in other runs.
	allHeld time.Duration
}

// errors counts requests that failed or got a non-2xx answer.
func (r runResult) errors() int64 { return r.res.TransportErrors + r.res.Non2xx }

// cpuPerRequest is the CPU time p spent per completed request over the
// window, in microseconds; NaN when nothing completed.
func (r runResult) cpuPerRequest(p load.Process) float64 {
	if r.res.Requests == 0 {
		return math.NaN()
	}
	return cpuSeconds(r, p) * 1e6 / float64(r.res.Requests)
}

// cpuPerMiB is the CPU time p spent per MiB of response body received over
// the window, in microseconds; NaN when no body came.
func (r runResult) cpuPerMiB(p load.Process) float64 {
	if r.res.BytesReceived == 0 {
		return math.NaN()
	}
	return cpuSeconds(r, p) * 1e6 / (float64(r.res.BytesReceived) / (1 << 20))
}

func cpuSeconds(r runResult, p load.Process) float64 {
	return p.CPUPercent / 100 * r.res.Duration.Seconds()
}

// proxyCPU is cpuPerRequest of the run's proxy; NaN in a direct run.
func (r runResult) proxyCPU() float64 {
	if r.target == direct {
		return math.NaN()
	}
	return r.cpuPerRequest(r.proxy)
}

// rssPerStream is how much the proxy's resident set rose above its idle
// figure at its peak, per stream the scenario keeps in flight, in bytes;
// NaN in a direct run or when the peak is unknown.
func (r runResult) rssPerStream(streams int) float64 {
	if r.target == direct || r.proxy.PeakRSSBytes == 0 || streams == 0 {
		return math.NaN()
	}
	return float64(r.proxy.PeakRSSBytes-r.proxy.IdleRSSBytes) / float64(streams)
}

// figures are one target's medians over a scenario's repetitions.
type figures struct {
	runs               int
	rps, bps, p50, p99 float64 // p50 and p99 in nanoseconds
	// cpu and cpuMiB are the proxy's CPU µs per request and per MiB of
	// response body; NaN for direct.
	cpu, cpuMiB float64
	backendCPU  float64 // the backend's CPU µs per request
	// idleRSS and peakRSS are the proxy's resident set before the load and
	// at its peak, and perStream the rise per stream in flight, in bytes.
	idleRSS, peakRSS, perStream float64
	held                        float64 // the backend's peak of requests in flight
	// allHeld is the median time to every stream held, in nanoseconds,
	// over the memory runs that got there; neverHeld counts those that
	// did not.
	allHeld   float64
	neverHeld int
	errs      int64 // summed over the repetitions
}

// spread is the lowest and highest of a ratio taken repetition by
// repetition; n counts the repetitions it was taken over.
type spread struct {
	min, max float64
	n        int
}

func (s *spread) add(x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return
	}
	if s.n == 0 || x < s.min {
		s.min = x
	}
	if s.n == 0 || x > s.max {
		s.max = x
	}
	s.n++
}

// summary is one scenario reduced to medians over its repetitions.
type summary struct {
	sc  scenario
	fig map[target]figures // targets without runs are absent
	// vsDirect and vsCaddy spread spooky's requests per second over
	// direct's and Caddy's, each paired with the run of the same
	// repetition.
	vsDirect, vsCaddy spread
}

// summarize reduces the runs of sc. Figures are medians over repetitions,
// and ratios are ratios of those medians.
func summarize(sc scenario, runs []runResult) summary {
	byTarget := map[target][]runResult{}
	for _, r := range runs {
		if r.scenario == sc.name {
			byTarget[r.target] = append(byTarget[r.target], r)
		}
	}
	sum := summary{sc: sc, fig: map[target]figures{}}
	for t, rs := range byTarget {
		f := figures{
			runs:       len(rs),
			rps:        median(rs, func(r runResult) float64 { return r.res.RequestsPerSec }),
			bps:        median(rs, func(r runResult) float64 { return r.res.BytesPerSec }),
			p50:        median(rs, func(r runResult) float64 { return float64(r.res.Latency.P50) }),
			p99:        median(rs, func(r runResult) float64 { return float64(r.res.Latency.P99) }),
			backendCPU: median(rs, func(r runResult) float64 { return r.cpuPerRequest(r.backend) }),
			held:       median(rs, func(r runResult) float64 { return float64(r.backendPeak) }),
			allHeld:    median(rs, func(r runResult) float64 { return positive(r.allHeld) }),
			cpu:        math.NaN(), cpuMiB: math.NaN(),
			idleRSS: math.NaN(), peakRSS: math.NaN(), perStream: math.NaN(),
		}
		if t != direct {
			f.cpu = median(rs, runResult.proxyCPU)
			f.cpuMiB = median(rs, func(r runResult) float64 { return r.cpuPerMiB(r.proxy) })
			f.idleRSS = median(rs, func(r runResult) float64 { return float64(r.proxy.IdleRSSBytes) })
			f.peakRSS = median(rs, func(r runResult) float64 { return nonZero(r.proxy.PeakRSSBytes) })
			f.perStream = median(rs, func(r runResult) float64 { return r.rssPerStream(sc.inFlight()) })
		}
		for _, r := range rs {
			f.errs += r.errors()
			if r.allHeld < 0 {
				f.neverHeld++
			}
		}
		sum.fig[t] = f
	}
	for _, s := range byTarget[spooky] {
		for _, o := range runs {
			if o.scenario != sc.name || o.rep != s.rep {
				continue
			}
			switch o.target {
			case direct:
				sum.vsDirect.add(ratio(s.res.RequestsPerSec, o.res.RequestsPerSec))
			case caddy:
				sum.vsCaddy.add(ratio(s.res.RequestsPerSec, o.res.RequestsPerSec))
			}
		}
	}
	return sum
}

// figures returns t's figures, all unknown when t did not run.
func (s summary) figures(t target) figures {
	if f, ok := s.fig[t]; ok {
		return f
	}
	nan := math.NaN()
	return figures{rps: nan, bps: nan, p50: nan, p99: nan, cpu: nan, cpuMiB: nan, backendCPU: nan,
		idleRSS: nan, peakRSS: nan, perStream: nan, held: nan, allHeld: nan}
}

// positive is d in nanoseconds, or NaN for a duration not taken.
func positive(d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return float64(d)
}

// nonZero is n, or NaN for zero: a figure that was not taken.
func nonZero(n int64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(n)
}

// median returns the median of f over runs, the mean of the middle two for
// an even count, ignoring NaNs; NaN when there is nothing to take it of.
func median(runs []runResult, f func(runResult) float64) float64 {
	var xs []float64
	for _, r := range runs {
		if x := f(r); !math.IsNaN(x) {
			xs = append(xs, x)
		}
	}
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	mid := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[mid]
	}
	return (xs[mid-1] + xs[mid]) / 2
}

// ratio returns a/b, NaN when b is zero or either is NaN.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

const dash = "—"

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return dash
	}
	return fmt.Sprintf("%.2f", x)
}

func fmtRate(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf("%.0f", x)
}

func fmtMiBps(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf("%.0f", x/(1<<20))
}

func fmtMiB(n float64) string {
	if math.IsNaN(n) {
		return dash
	}
	return fmt.Sprintf("%.0f MiB", n/(1<<20))
}

func fmtMicros(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf("%.0f", x)
}

// fmtLatency rounds a latency to three significant figures or so.
func fmtLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return dash
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// fmtLatencyNs formats a latency in nanoseconds that may be NaN.
func fmtLatencyNs(ns float64) string {
	if math.IsNaN(ns) {
		return dash
	}
	return fmtLatency(time.Duration(ns))
}

func fmtMiBFine(n float64) string {
	if math.IsNaN(n) {
		return dash
	}
	return fmt.Sprintf("%.1f MiB", n/(1<<20))
}

func fmtKiB(n float64) string {
	if math.IsNaN(n) {
		return dash
	}
	return fmt.Sprintf("%.1f", n/(1<<10))
}

func fmtCount(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf("%.0f", x)
}

// fmtAllHeld says how long the memory runs took to get every stream held,
// and how many never did.
func fmtAllHeld(f figures) string {
	switch {
	case f.neverHeld == 0:
		return fmtLatencyNs(f.allHeld)
	case math.IsNaN(f.allHeld):
		return "never"
	default:
		return fmt.Sprintf("%s (%d never)", fmtLatencyNs(f.allHeld), f.neverHeld)
	}
}

// fmtRatioSpread is a ratio of medians with, over more than one
// repetition, the lowest and highest ratio of single repetitions.
func fmtRatioSpread(x float64, s spread) string {
	cell := fmtRatio(x)
	if s.n > 1 {
		cell += fmt.Sprintf(" (%s–%s)", fmtRatio(s.min), fmtRatio(s.max))
	}
	return cell
}

// column is one column of a summary table.
type column struct {
	head string
	// caddy says whether the column needs Caddy's figures (withCaddy), is
	// for a run without them (withoutCaddy), or is always shown.
	caddy caddyUse
	cell  func(summary) string
}

type caddyUse int

const (
	always caddyUse = iota
	withCaddy
	withoutCaddy
)

// bulkOnly shows f's cell only for bulk scenarios, where bytes per second
// are the figure that matters.
func bulkOnly(f func(summary) string) func(summary) string {
	return func(s summary) string {
		if !s.sc.bulk {
			return dash
		}
		return f(s)
	}
}

// throughputColumns are the columns of the table of throughput scenarios;
// README and bench/RESULTS.md explain them.
var throughputColumns = []column{
	{"scenario", always, func(s summary) string { return s.sc.name }},
	{"direct req/s", always, func(s summary) string { return fmtRate(s.figures(direct).rps) }},
	{"spooky req/s", always, func(s summary) string { return fmtRate(s.figures(spooky).rps) }},
	{"caddy req/s", withCaddy, func(s summary) string { return fmtRate(s.figures(caddy).rps) }},
	{"spooky/direct (min–max)", always, func(s summary) string {
		return fmtRatioSpread(ratio(s.figures(spooky).rps, s.figures(direct).rps), s.vsDirect)
	}},
	{"spooky/caddy (min–max)", withCaddy, func(s summary) string {
		return fmtRatioSpread(ratio(s.figures(spooky).rps, s.figures(caddy).rps), s.vsCaddy)
	}},
	{"p99 direct", always, func(s summary) string { return fmtLatencyNs(s.figures(direct).p99) }},
	{"p99 spooky", always, func(s summary) string { return fmtLatencyNs(s.figures(spooky).p99) }},
	{"p99 caddy", withCaddy, func(s summary) string { return fmtLatencyNs(s.figures(caddy).p99) }},
	{"p99 spooky/direct", always, func(s summary) string {
		return fmtRatio(ratio(s.figures(spooky).p99, s.figures(direct).p99))
	}},
	{"p99 spooky/caddy", withCaddy, func(s summary) string {
		return fmtRatio(ratio(s.figures(spooky).p99, s.figures(caddy).p99))
	}},
	{"MiB/s direct", always, bulkOnly(func(s summary) string { return fmtMiBps(s.figures(direct).bps) })},
	{"MiB/s spooky", always, bulkOnly(func(s summary) string { return fmtMiBps(s.figures(spooky).bps) })},
	{"MiB/s caddy", withCaddy, bulkOnly(func(s summary) string { return fmtMiBps(s.figures(caddy).bps) })},
	{"MiB/s spooky/direct", always, bulkOnly(func(s summary) string {
		return fmtRatio(ratio(s.figures(spooky).bps, s.figures(direct).bps))
	})},
	{"MiB/s spooky/caddy", withCaddy, bulkOnly(func(s summary) string {
		return fmtRatio(ratio(s.figures(spooky).bps, s.figures(caddy).bps))
	})},
	{"spooky CPU µs/req", always, func(s summary) string { return fmtMicros(s.figures(spooky).cpu) }},
	{"caddy CPU µs/req", withCaddy, func(s summary) string { return fmtMicros(s.figures(caddy).cpu) }},
	{"spooky CPU µs/MiB", always, bulkOnly(func(s summary) string { return fmtMicros(s.figures(spooky).cpuMiB) })},
	{"caddy CPU µs/MiB", withCaddy, bulkOnly(func(s summary) string { return fmtMicros(s.figures(caddy).cpuMiB) })},
	{"backend CPU µs/req (direct)", always, func(s summary) string { return fmtMicros(s.figures(direct).backendCPU) }},
	{"spooky peak RSS", always, func(s summary) string { return fmtMiB(s.figures(spooky).peakRSS) }},
	{"caddy peak RSS", withCaddy, func(s summary) string { return fmtMiB(s.figures(caddy).peakRSS) }},
	{"errors direct/spooky", withoutCaddy, func(s summary) string {
		return fmt.Sprintf("%d/%d", s.figures(direct).errs, s.figures(spooky).errs)
	}},
	{"errors direct/spooky/caddy", withCaddy, func(s summary) string {
		return fmt.Sprintf("%d/%d/%d", s.figures(direct).errs, s.figures(spooky).errs, s.figures(caddy).errs)
	}},
}

// memoryColumns are the columns of the table of memory scenarios.
var memoryColumns = []column{
	{"scenario", always, func(s summary) string { return s.sc.name }},
	{"streams", always, func(s summary) string { return fmt.Sprint(s.sc.inFlight()) }},
	{"held at once via spooky", always, func(s summary) string { return fmtCount(s.figures(spooky).held) }},
	{"held at once via caddy", withCaddy, func(s summary) string { return fmtCount(s.figures(caddy).held) }},
	{"all held after, spooky", always, func(s summary) string { return fmtAllHeld(s.figures(spooky)) }},
	{"all held after, caddy", withCaddy, func(s summary) string { return fmtAllHeld(s.figures(caddy)) }},
	{"spooky RSS idle", always, func(s summary) string { return fmtMiBFine(s.figures(spooky).idleRSS) }},
	{"spooky RSS peak", always, func(s summary) string { return fmtMiBFine(s.figures(spooky).peakRSS) }},
	{"spooky KiB/stream", always, func(s summary) string { return fmtKiB(s.figures(spooky).perStream) }},
	{"caddy RSS idle", withCaddy, func(s summary) string { return fmtMiBFine(s.figures(caddy).idleRSS) }},
	{"caddy RSS peak", withCaddy, func(s summary) string { return fmtMiBFine(s.figures(caddy).peakRSS) }},
	{"caddy KiB/stream", withCaddy, func(s summary) string { return fmtKiB(s.figures(caddy).perStream) }},
	{"KiB/stream spooky/caddy", withCaddy, func(s summary) string {
		return fmtRatio(ratio(s.figures(spooky).perStream, s.figures(caddy).perStream))
	}},
	{"errors spooky", withoutCaddy, func(s summary) string { return fmt.Sprint(s.figures(spooky).errs) }},
	{"errors spooky/caddy", withCaddy, func(s summary) string {
		return fmt.Sprintf("%d/%d", s.figures(spooky).errs, s.figures(caddy).errs)
	}},
}

// table renders sums in cols, leaving out the columns that are not for a
// bench with (or without) Caddy.
func table(cols []column, caddyRan bool, sums []summary) (header []string, rows [][]string) {
	var use []column
	for _, c := range cols {
		if c.caddy == always || (c.caddy == withCaddy) == caddyRan {
			use = append(use, c)
		}
	}
	header = make([]string, len(use))
	for i, c := range use {
		header[i] = c.head
	}
	rows = make([][]string, len(sums))
	for i, s := range sums {
		rows[i] = make([]string, len(use))
		for j, c := range use {
			rows[i][j] = c.cell(s)
		}
	}
	return header, rows
}

// writeSummaries writes a table of the throughput scenarios among sums and
// one of the memory scenarios, each only if there are any.
func writeSummaries(w io.Writer, caddyRan bool, sums []summary) {
	var through, mem []summary
	for _, s := range sums {
		if s.sc.memory {
			mem = append(mem, s)
		} else {
			through = append(through, s)
		}
	}
	if len(through) > 0 {
		header, rows := table(throughputColumns, caddyRan, through)
		writeTable(w, header, rows)
	}
	if len(through) > 0 && len(mem) > 0 {
		fmt.Fprintln(w)
	}
	if len(mem) > 0 {
		header, rows := table(memoryColumns, caddyRan, mem)
		writeTable(w, header, rows)
	}
}

// runHeader and runRow are the columns of the every-run table.
var runHeader = []string{
	"scenario", "rep", "target", "req/s", "p50", "p99", "max", "MiB/s", "errors",
	"proxy CPU µs/req", "proxy RSS before", "proxy RSS peak", "proxy RSS end",
	"backend CPU µs/req", "backend peak in flight", "all held after",
}

func (r runResult) row() []string {
	errs := fmt.Sprint(r.errors())
	if r.res.FirstError != "" {
		errs += " (" + r.res.FirstError + ")"
	}
	idle, peak, end := dash, dash, dash
	if r.target != direct {
		idle, peak, end = fmtMiB(float64(r.proxy.IdleRSSBytes)), fmtMiB(nonZero(r.proxy.PeakRSSBytes)), fmtMiB(float64(r.proxy.RSSBytes))
	}
	allHeld := dash
	switch {
	case r.allHeld < 0:
		allHeld = "never"
	case r.allHeld > 0:
		allHeld = fmtLatency(r.allHeld)
	}
	return []string{
		r.scenario, fmt.Sprint(r.rep), string(r.target),
		fmtRate(r.res.RequestsPerSec), fmtLatency(r.res.Latency.P50), fmtLatency(r.res.Latency.P99),
		fmtLatency(r.res.Latency.Max), fmtMiBps(r.res.BytesPerSec), errs,
		fmtMicros(r.proxyCPU()), idle, peak, end,
		fmtMicros(r.cpuPerRequest(r.backend)), fmt.Sprint(r.backendPeak), allHeld,
	}
}

// writeTable writes a Markdown table with its columns padded, so that it
// reads as well in a terminal as rendered. Pipes in cells are escaped.
func writeTable(w io.Writer, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for _, row := range append([][]string{header}, rows...) {
		for i, cell := range row {
			widths[i] = max(widths[i], len([]rune(escapeCell(cell))))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, cell := range cells {
			cell = escapeCell(cell)
			b.WriteString(" " + cell + strings.Repeat(" ", widths[i]-len([]rune(cell))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", widths[i])
	}
	line(sep)
	for _, row := range rows {
		line(row)
	}
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// record is what one bench appends to the results file.
type record struct {
	when     time.Time
	commit   string // short hash, with -dirty when the tree had changes
	command  string // the command line, quoted for a shell
	setup    string // one line: reps, durations, machine
	caddyRan bool   // whether the Caddy columns have figures
	sums     []summary
	runs     []runResult
}

// write renders the record as a Markdown section under the file's "Runs"
// heading: a heading with the date and commit, the command, the summary
// tables, and every run folded away.
func (rec record) write(w io.Writer) {
	fmt.Fprintf(w, "### %s · %s\n\n", rec.when.UTC().Format("2006-01-02 15:04 MST"), rec.commit)
	fmt.Fprintf(w, "`%s`  \n%s\n\n", rec.command, rec.setup)
	writeSummaries(w, rec.caddyRan, rec.sums)
	fmt.Fprintf(w, "\n<details><summary>every run, in the order run</summary>\n\n")
	rows := make([][]string, len(rec.runs))
	for i, r := range rec.runs {
		rows[i] = r.row()
	}
	writeTable(w, runHeader, rows)
	fmt.Fprintf(w, "\n</details>\n\n")
}

// resultsPreamble starts a results file that does not exist yet.
const resultsPreamble = "# spooky benchmark results\n\n" +
	"Appended by `make bench` (bench/cmd/benchrun); newest last.\n\n## Runs\n\n"

// appendRecord appends rec to the results file at path, creating it with a
// short preamble if it does not exist, and starting on a fresh line if the
// file does not end in one.
func appendRecord(path string, rec record) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var b strings.Builder
	switch {
	case os.IsNotExist(err):
		b.WriteString(resultsPreamble)
	case len(old) > 0 && !strings.HasSuffix(string(old), "\n"):
		b.WriteString("\n\n")
	case len(old) > 0 && !strings.HasSuffix(string(old), "\n\n"):
		b.WriteString("\n")
	}
	rec.write(&b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, b.String())
	return errors.Join(err, f.Close())
}
