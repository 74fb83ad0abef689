// Command benchrun is spooky's side-by-side benchmark, what `make bench`
// runs: the same HTTP/3 load sent to the bench backend directly, through
// spooky and through Caddy, a real proxy doing the same job, so the tables
// it prints say what putting spooky in front costs and how that compares.
//
// It uses the binaries `make build` leaves in bin/: it starts one backend
// (bin/backend) serving h2c for the proxies' upstream and the same handlers
// over HTTP/3, and over HTTP/2 over TLS, as the no-proxy references;
// bin/spooky on a config it writes to a temporary directory (a free loopback
// port for QUIC and TCP alike, one route to the backend, log level warn,
// pool workers sized for the load); and Debian's caddy on a JSON
// config written beside it (HTTPS with HTTP/3 on a free loopback port,
// spooky's kind of dev certificate written as PEM, reverse_proxy to the
// same backend over h2c, no access log, no admin API, no automatic HTTPS).
// When caddy is not on PATH and the bench runs as root, it installs it with
// apt-get install -y caddy; when it cannot, it says why and leaves the Caddy
// columns out. Each scenario runs bin/h3load -json against the targets in
// an order rotated every repetition, so that drift on the machine (thermal,
// noisy neighbours) falls on all alike, and reads the proxies' and the
// backend's CPU time and memory from /proc over each measured window.
//
// The TCP scenario (tcp-small-4x16) sends HTTP/2 over TLS instead (h3load
// -proto h2, one TCP connection per connection): to spooky's and Caddy's
// TCP listeners, on the port of their HTTP/3 ones, and directly to the
// backend's HTTP/2 over TLS server, so that the cost of spooky's TCP path
// is known beside that of its HTTP/3 one.
//
// Memory scenarios (mem-1k, mem-10k) hold 1 000 or 10 000 requests open at
// once through each proxy, started afresh for every run, and report its
// resident set before the load, at its peak, and the rise per stream.
//
// It prints every run as it finishes and then tables of medians per
// scenario, and appends a dated section with the git commit and the command
// line to bench/RESULTS.md. SIGINT or SIGTERM stops the bench and its
// children; nothing is recorded then.
//
//	benchrun                                  # every scenario, 3 repetitions of 5s
//	benchrun -quick                           # smoke test: small-4x16, 1 repetition of 2s, not recorded
//	benchrun -scenarios large-4x4,upload-4x4 -reps 5 -d 10s
//	benchrun -scenarios mem-1k,mem-10k -reps 1 -d 3s -no-record
//	benchrun -scenarios small-4x16 -profile /tmp/prof   # also a CPU and allocation profile of spooky
//	benchrun -no-caddy                        # direct and spooky only
//
// Linux only: CPU and memory come from /proc.
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
	"slices"
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
	// poolWorkers is spooky's pool size for the throughput scenarios, and
	// for the memory ones too when poolExplicit.
	poolWorkers  int
	poolExplicit bool
	profileDir   string
	caddy        string // the caddy binary to run
	noCaddy      bool
}

// poolFor is the pool size spooky runs sc with: -pool-workers, or twice
// the requests in flight (at least 64), over all the throughput scenarios
// of the bench, which share one spooky, or for a memory scenario alone.
func (o options) poolFor(sc scenario) int {
	if sc.memory && !o.poolExplicit {
		return poolWorkersFor([]scenario{sc})
	}
	return o.poolWorkers
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
	fs.IntVar(&o.poolWorkers, "pool-workers", 0, "spooky's stages.pool.workers (default: twice the most requests a selected scenario keeps in flight, at least 64; a memory scenario's own)")
	fs.StringVar(&o.caddy, "caddy", "caddy", "the Caddy binary to compare with; the plain name is installed with apt-get when missing and running as root")
	fs.BoolVar(&o.noCaddy, "no-caddy", false, "leave Caddy out: direct and spooky only")
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
	o.poolExplicit = o.poolWorkers > 0
	if !o.poolExplicit {
		var shared []scenario
		for _, sc := range o.scenarios {
			if !sc.memory {
				shared = append(shared, sc)
			}
		}
		o.poolWorkers = poolWorkersFor(shared)
	}
	return o, nil
}

// run starts the servers, runs every scenario, prints the tables and
// records them.
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

	caddyBin, caddyVer, caddyWhy := findCaddyFor(ctx, opts, out)
	if caddyBin == "" {
		fmt.Fprintf(out, "Caddy: not run, so no Caddy columns: %s\n", caddyWhy)
	} else {
		fmt.Fprintf(out, "Caddy: %s (%s)\n", caddyVer, caddyBin)
	}

	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	b, err := startBench(ctx, opts, caddyBin, out, fail)
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
	fmt.Fprintf(out, "%d scenario(s) × %d repetition(s) × %d targets, %v warm-up + %v each",
		len(opts.scenarios), opts.reps, len(b.targets(scenario{})), opts.warmup, opts.duration)
	if slices.ContainsFunc(opts.scenarios, func(sc scenario) bool { return sc.memory }) {
		fmt.Fprintf(out, " (memory scenarios: the proxies only, until every stream is held, at most %v, then %v)",
			memoryRampLimit, opts.duration)
	}
	fmt.Fprint(out, "\n\n")

	var runs []runResult
	for _, sc := range opts.scenarios {
		for rep := 1; rep <= opts.reps; rep++ {
			for _, t := range order(b.targets(sc), rep) {
				r, err := b.runOnce(ctx, sc, rep, t)
				if err != nil {
					return err
				}
				runs = append(runs, r)
				fmt.Fprintln(out, progressLine(r))
			}
		}
		if opts.profileDir != "" {
			if sc.memory {
				fmt.Fprintf(out, "no profile of %s: memory scenarios restart spooky for every run\n", sc.name)
			} else if err := b.profile(ctx, sc); err != nil {
				return err
			}
		}
	}

	sums := make([]summary, len(opts.scenarios))
	for i, sc := range opts.scenarios {
		sums[i] = summarize(sc, runs)
	}
	rec := record{
		when:     started,
		commit:   commit,
		command:  shellCommand(os.Args),
		setup:    setupLine(opts, caddyVer, caddyWhy, loadavg),
		caddyRan: caddyBin != "",
		sums:     sums,
		runs:     runs,
	}
	fmt.Fprintf(out, "\nmedians over %d repetition(s); ratios are of the medians (min–max over the runs of one repetition):\n\n", opts.reps)
	writeSummaries(out, rec.caddyRan, sums)
	if !opts.record {
		return nil
	}
	if err := appendRecord(opts.results, rec); err != nil {
		return fmt.Errorf("recording: %w", err)
	}
	fmt.Fprintf(out, "\nappended to %s\n", opts.results)
	return nil
}

// findCaddyFor returns the caddy binary and its version, or empty strings
// and why Caddy will not run.
func findCaddyFor(ctx context.Context, opts options, out io.Writer) (bin, version, why string) {
	if opts.noCaddy {
		return "", "", "-no-caddy given"
	}
	bin, err := systemCaddyFinder().find(ctx, opts.caddy, out)
	if err == nil {
		version, err = caddyVersion(ctx, bin)
	}
	if err != nil {
		return "", "", err.Error()
	}
	return bin, version, ""
}

// progressLine is what is printed of a run as it finishes.
func progressLine(r runResult) string {
	line := fmt.Sprintf("%-14s rep %d %-6s ", r.scenario, r.rep, r.target)
	switch {
	case r.allHeld < 0:
		line += fmt.Sprintf("backend held %d at most, never all", r.backendPeak)
	case r.allHeld > 0:
		line += fmt.Sprintf("backend held %d after %s", r.backendPeak, fmtLatency(r.allHeld))
	default:
		line += fmt.Sprintf("%8s req/s  p50 %-9s p99 %-9s %5s MiB/s", fmtRate(r.res.RequestsPerSec),
			fmtLatency(r.res.Latency.P50), fmtLatency(r.res.Latency.P99), fmtMiBps(r.res.BytesPerSec))
	}
	line += fmt.Sprintf("  errors %d", r.errors())
	if r.target != direct {
		line += fmt.Sprintf("  %s", r.target)
		if r.allHeld == 0 {
			line += fmt.Sprintf(" %s µs/req,", fmtMicros(r.proxyCPU()))
		}
		line += fmt.Sprintf(" RSS %s before, %s peak",
			fmtMiBFine(float64(r.proxy.IdleRSSBytes)), fmtMiBFine(nonZero(r.proxy.PeakRSSBytes)))
	}
	if r.res.FirstError != "" {
		line += "  first error: " + r.res.FirstError
	}
	return line
}

// order is the order of targets in repetition rep (from 1): rotated by one
// place every repetition, so that over as many repetitions as there are
// targets each runs once in every place.
func order(targets []target, rep int) []target {
	if len(targets) == 0 {
		return nil
	}
	k := (rep - 1) % len(targets)
	return append(slices.Clone(targets[k:]), targets[:k]...)
}
