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
)

// runResult is one load generator run and the resource use of the two
// server processes over its measured window.
type runResult struct {
	scenario string
	rep      int // from 1
	target   target
	res      load.Result
	// spookyProc and backendProc are the proxy's and the backend's CPU and
	// RSS over the window; spooky idles through a direct run.
	spookyProc, backendProc load.Process
}

// errors counts requests that failed or got a non-2xx answer.
func (r runResult) errors() int64 { return r.res.TransportErrors + r.res.Non2xx }

// cpuPerRequest is the CPU time p spent per completed request over the
// window, in microseconds; NaN when nothing completed.
func (r runResult) cpuPerRequest(p load.Process) float64 {
	if r.res.Requests == 0 {
		return math.NaN()
	}
	cpu := p.CPUPercent / 100 * r.res.Duration.Seconds() // CPU seconds
	return cpu * 1e6 / float64(r.res.Requests)
}

// summary is one scenario reduced to medians over its repetitions.
type summary struct {
	sc   scenario
	reps int
	// Requests per second, and the spread of spooky/direct over the
	// repetitions, each paired with the direct run next to it in time.
	directRPS, spookyRPS   float64
	ratioMin, ratioMax     float64
	directP99, spookyP99   float64 // nanoseconds
	directBPS, spookyBPS   float64 // response body bytes per second
	spookyCPU              float64 // µs of spooky CPU per request
	spookyRSS              float64 // bytes at the end of the window
	backendCPU             float64 // µs of backend CPU per request, direct runs
	directErrs, spookyErrs int64   // summed over the repetitions
}

// summarize reduces the runs of sc. Figures are medians over repetitions,
// and ratios are ratios of those medians.
func summarize(sc scenario, runs []runResult) summary {
	var d, s []runResult
	for _, r := range runs {
		if r.scenario != sc.name {
			continue
		}
		switch r.target {
		case direct:
			d = append(d, r)
		case spooky:
			s = append(s, r)
		}
	}
	sum := summary{sc: sc, reps: min(len(d), len(s)), ratioMin: math.NaN(), ratioMax: math.NaN()}
	rps := func(r runResult) float64 { return r.res.RequestsPerSec }
	bps := func(r runResult) float64 { return r.res.BytesPerSec }
	p99 := func(r runResult) float64 { return float64(r.res.Latency.P99) }
	sum.directRPS, sum.spookyRPS = median(d, rps), median(s, rps)
	sum.directBPS, sum.spookyBPS = median(d, bps), median(s, bps)
	sum.directP99, sum.spookyP99 = median(d, p99), median(s, p99)
	sum.spookyCPU = median(s, func(r runResult) float64 { return r.cpuPerRequest(r.spookyProc) })
	sum.spookyRSS = median(s, func(r runResult) float64 { return float64(r.spookyProc.RSSBytes) })
	sum.backendCPU = median(d, func(r runResult) float64 { return r.cpuPerRequest(r.backendProc) })
	for _, r := range d {
		sum.directErrs += r.errors()
	}
	for _, r := range s {
		sum.spookyErrs += r.errors()
	}
	for _, sr := range s {
		for _, dr := range d {
			if dr.rep != sr.rep || dr.res.RequestsPerSec == 0 {
				continue
			}
			ratio := sr.res.RequestsPerSec / dr.res.RequestsPerSec
			if math.IsNaN(sum.ratioMin) || ratio < sum.ratioMin {
				sum.ratioMin = ratio
			}
			if math.IsNaN(sum.ratioMax) || ratio > sum.ratioMax {
				sum.ratioMax = ratio
			}
		}
	}
	return sum
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

// summaryHeader and row are the columns of the summary table; README and
// bench/RESULTS.md explain them.
var summaryHeader = []string{
	"scenario", "direct req/s", "spooky req/s", "spooky/direct (min–max)",
	"p99 direct", "p99 spooky", "p99 spooky/direct",
	"MiB/s direct", "MiB/s spooky", "MiB/s spooky/direct",
	"spooky CPU µs/req", "backend CPU µs/req (direct)", "spooky RSS", "errors direct/spooky",
}

func (s summary) row() []string {
	ratioCell := fmtRatio(ratio(s.spookyRPS, s.directRPS))
	if s.reps > 1 {
		ratioCell += fmt.Sprintf(" (%s–%s)", fmtRatio(s.ratioMin), fmtRatio(s.ratioMax))
	}
	mibD, mibS, mibRatio := dash, dash, dash
	if s.sc.bulk {
		mibD, mibS = fmtMiBps(s.directBPS), fmtMiBps(s.spookyBPS)
		mibRatio = fmtRatio(ratio(s.spookyBPS, s.directBPS))
	}
	return []string{
		s.sc.name, fmtRate(s.directRPS), fmtRate(s.spookyRPS), ratioCell,
		fmtLatencyNs(s.directP99), fmtLatencyNs(s.spookyP99), fmtRatio(ratio(s.spookyP99, s.directP99)),
		mibD, mibS, mibRatio,
		fmtMicros(s.spookyCPU), fmtMicros(s.backendCPU), fmtMiB(s.spookyRSS),
		fmt.Sprintf("%d/%d", s.directErrs, s.spookyErrs),
	}
}

// runHeader and runRow are the columns of the every-run table.
var runHeader = []string{
	"scenario", "rep", "target", "req/s", "p50", "p99", "max", "MiB/s",
	"errors", "spooky CPU µs/req", "spooky RSS", "backend CPU µs/req",
}

func (r runResult) row() []string {
	errs := fmt.Sprint(r.errors())
	if r.res.FirstError != "" {
		errs += " (" + r.res.FirstError + ")"
	}
	return []string{
		r.scenario, fmt.Sprint(r.rep), string(r.target),
		fmtRate(r.res.RequestsPerSec), fmtLatency(r.res.Latency.P50), fmtLatency(r.res.Latency.P99),
		fmtLatency(r.res.Latency.Max), fmtMiBps(r.res.BytesPerSec), errs,
		fmtMicros(r.cpuPerRequest(r.spookyProc)), fmtMiB(float64(r.spookyProc.RSSBytes)),
		fmtMicros(r.cpuPerRequest(r.backendProc)),
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
	when    time.Time
	commit  string // short hash, with -dirty when the tree had changes
	command string // the command line, quoted for a shell
	setup   string // one line: reps, durations, machine
	sums    []summary
	runs    []runResult
}

// write renders the record as a Markdown section under the file's "Runs"
// heading: a heading with the date and commit, the command, the summary table, and every run folded away.
func (rec record) write(w io.Writer) {
	fmt.Fprintf(w, "### %s · %s\n\n", rec.when.UTC().Format("2006-01-02 15:04 MST"), rec.commit)
	fmt.Fprintf(w, "`%s`  \n%s\n\n", rec.command, rec.setup)
	rows := make([][]string, len(rec.sums))
	for i, s := range rec.sums {
		rows[i] = s.row()
	}
	writeTable(w, summaryHeader, rows)
	fmt.Fprintf(w, "\n<details><summary>every run, in the order run</summary>\n\n")
	rows = make([][]string, len(rec.runs))
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
