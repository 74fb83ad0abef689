// Command benchrun is spooky's side-by-side benchmark, what `make bench`
// runs: the same HTTP/3 load sent to the bench backend directly and through
// spooky, so the table it prints says what putting spooky in front costs.
//
// It uses the binaries `make build` leaves in bin/: it starts one backend
// (bin/backend) serving h2c for spooky's upstream and the same handlers over
// HTTP/3 as the no-proxy reference, and bin/spooky on a config it writes to
// a temporary directory (free loopback ports, one route to the backend, log
// level warn, pool workers sized for the load). Each scenario then runs
// bin/h3load -json against the two targets alternately, the order flipped
// every other repetition so that drift on the machine (thermal, noisy
// neighbours) falls on both alike, and reads spooky's and the backend's CPU
// time and RSS from /proc over each measured window.
//
// It prints every run as it finishes and then a table of medians per
// scenario, and appends a dated section with the git commit and the command
// line to bench/RESULTS.md. SIGINT or SIGTERM stops the bench and its
// children; nothing is recorded then.
//
//	benchrun                                  # every scenario, 3 repetitions of 5s
//	benchrun -quick                           # smoke test: small-4x16, 1 repetition of 2s, not recorded
//	benchrun -scenarios large-4x4,upload-4x4 -reps 5 -d 10s
//	benchrun -scenarios small-4x16 -profile /tmp/prof   # also a CPU and allocation profile of spooky
//
// Linux only: CPU and RSS come from /proc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// options are the flags.
type options struct {
	bin              string
	reps             int
	duration, warmup time.Duration
	scenarios        []scenario
	results          string
	record           bool
	poolWorkers      int
	profileDir       string
}

func main() {
	opts, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

// parseFlags reads the flags; -quick sets shorter defaults that flags given
// explicitly still override.
func parseFlags(fs *flag.FlagSet, args []string) (options, error) {
	var (
		o         options
		list      string
		quick     bool
		noRecord  bool
		explicitF = map[string]bool{}
	)
	fs.StringVar(&o.bin, "bin", "bin", "directory holding the spooky, backend and h3load binaries (make build)")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each scenario against each target")
	fs.DurationVar(&o.duration, "d", 5*time.Second, "measured duration of each run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load sent before each run's measured window, not counted")
	fs.StringVar(&list, "scenarios", "", "comma-separated scenarios to run (default all: "+scenarioNames()+")")
	fs.BoolVar(&quick, "quick", false, "smoke test: 1 repetition of 2s of small-4x16, not recorded unless -results is given")
	fs.StringVar(&o.results, "results", filepath.Join("bench", "RESULTS.md"), "Markdown file to append the results to")
	fs.BoolVar(&noRecord, "no-record", false, "do not append to the results file")
	fs.IntVar(&o.poolWorkers, "pool-workers", 0, "spooky's stages.pool.workers (default: twice the most requests a selected scenario keeps in flight, at least 64)")
	fs.StringVar(&o.profileDir, "profile", "", "after each scenario, run it once more through spooky and save its CPU and allocation profiles over the measured window in this directory (not part of the table)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { explicitF[f.Name] = true })
	if quick {
		if !explicitF["reps"] {
			o.reps = 1
		}
		if !explicitF["d"] {
			o.duration = 2 * time.Second
		}
		if !explicitF["scenarios"] {
			list = "small-4x16"
		}
		if !explicitF["results"] {
			noRecord = true
		}
	}
	o.record = !noRecord
	var err error
	if o.scenarios, err = selectScenarios(list); err != nil {
		return o, err
	}
	if o.reps < 1 || o.duration <= 0 || o.warmup < 0 || o.poolWorkers < 0 {
		return o, errors.New("-reps and -d must be positive, -warmup and -pool-workers not negative")
	}
	if o.poolWorkers == 0 {
		o.poolWorkers = poolWorkersFor(o.scenarios)
	}
	return o, nil
}

// run starts the servers, runs every scenario, prints the table and
// records it.
func run(ctx context.Context, opts options, out io.Writer) (err error) {
	for _, name := range []string{"spooky", "backend", "h3load"} {
		if _, err := os.Stat(filepath.Join(opts.bin, name)); err != nil {
			return fmt.Errorf("%w (run make build first, or point -bin at the binaries)", err)
		}
	}
	// Decided now, so a tree edited while the bench runs is not credited.
	commit := gitCommit()
	loadavg := loadAverage()
	started := time.Now()

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	b, err := startBench(ctx, opts, fail)
	if b != nil {
		defer func() {
			if err != nil && context.Cause(ctx) == nil {
				// Not a child's exit, which quotes its log already: show
				// what the servers said before their logs go.
				err = fmt.Errorf("%w\n%s", err, b.logTails())
			}
			err = errors.Join(err, b.stop())
		}()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "backend pid %d (h2c %s, HTTP/3 %s); spooky pid %d (HTTP/3 %s, admin %s, pool workers %d)\n",
		b.backend.pid(), b.h2c, b.h3, b.spooky.pid(), b.listen, b.admin, opts.poolWorkers)
	fmt.Fprintf(out, "%d scenario(s) × %d repetition(s) × 2 targets × (%v warm-up + %v)\n\n",
		len(opts.scenarios), opts.reps, opts.warmup, opts.duration)

	var runs []runResult
	for _, sc := range opts.scenarios {
		for rep := 1; rep <= opts.reps; rep++ {
			for _, t := range order(rep) {
				r, err := b.runOnce(ctx, sc, rep, t)
				if err != nil {
					return err
				}
				runs = append(runs, r)
				fmt.Fprintf(out, "%-11s rep %d %-6s %8s req/s  p50 %-9s p99 %-9s %5s MiB/s  errors %d  spooky %s µs/req\n",
					sc.name, rep, t, fmtRate(r.res.RequestsPerSec), fmtLatency(r.res.Latency.P50),
					fmtLatency(r.res.Latency.P99), fmtMiBps(r.res.BytesPerSec), r.errors(),
					fmtMicros(r.cpuPerRequest(r.spookyProc)))
			}
		}
		if opts.profileDir != "" {
			if err := b.profile(ctx, sc); err != nil {
				return err
			}
		}
	}

	sums := make([]summary, len(opts.scenarios))
	sumRows := make([][]string, len(sums))
	for i, sc := range opts.scenarios {
		sums[i] = summarize(sc, runs)
		sumRows[i] = sums[i].row()
	}
	rec := record{
		when:    started,
		commit:  commit,
		command: shellCommand(os.Args),
		setup:   setupLine(opts, loadavg),
		sums:    sums,
		runs:    runs,
	}
	fmt.Fprintf(out, "\nmedians over %d repetition(s); ratios are spooky/direct of the medians (min–max over paired repetitions):\n\n", opts.reps)
	writeTable(out, summaryHeader, sumRows)
	if !opts.record {
		return nil
	}
	if err := appendRecord(opts.results, rec); err != nil {
		return fmt.Errorf("recording: %w", err)
	}
	fmt.Fprintf(out, "\nappended to %s\n", opts.results)
	return nil
}

// order is which target goes first in repetition rep (from 1): direct in
// odd ones, spooky in even ones.
func order(rep int) []target {
	if rep%2 == 1 {
		return []target{direct, spooky}
	}
	return []target{spooky, direct}
}
