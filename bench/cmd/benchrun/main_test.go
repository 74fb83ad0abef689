package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"spooky/config"
)

func parse(t *testing.T, args ...string) (options, error) {
	t.Helper()
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return parseFlags(fs, args)
}

func names(scs []scenario) string {
	out := make([]string, len(scs))
	for i, s := range scs {
		out[i] = s.name
	}
	return strings.Join(out, ",")
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args        []string
		reps        int
		d           time.Duration
		scenarios   string
		record      bool
		poolWorkers int
	}{
		{nil, 3, 5 * time.Second, "small-4x16,small-32x8,large-4x4,upload-4x4,tcp-small-4x16,mem-1k,mem-10k", true, 512},
		{[]string{"-scenarios", "tcp-small-4x16", "-reps", "1", "-d", "2s", "-no-record"}, 1, 2 * time.Second, "tcp-small-4x16", false, 128},
		{[]string{"-scenarios", "mem-10k", "-reps", "1", "-d", "3s", "-no-record"}, 1, 3 * time.Second, "mem-10k", false, 64},
		{[]string{"-quick"}, 1, 2 * time.Second, "small-4x16", false, 128},
		{[]string{"-quick", "-reps", "2", "-results", "x.md"}, 2, 2 * time.Second, "small-4x16", true, 128},
		{[]string{"-quick", "-scenarios", "large-4x4", "-d", "1s"}, 1, time.Second, "large-4x4", false, 64},
		{[]string{"-scenarios", "upload-4x4, small-4x16", "-no-record", "-pool-workers", "7"}, 3, 5 * time.Second, "upload-4x4,small-4x16", false, 7},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parse(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if o.reps != tt.reps || o.duration != tt.d || names(o.scenarios) != tt.scenarios ||
				o.record != tt.record || o.poolWorkers != tt.poolWorkers {
				t.Errorf("got reps %d, d %v, scenarios %s, record %v, pool workers %d; want %d, %v, %s, %v, %d",
					o.reps, o.duration, names(o.scenarios), o.record, o.poolWorkers,
					tt.reps, tt.d, tt.scenarios, tt.record, tt.poolWorkers)
			}
		})
	}
	o, err := parse(t)
	if err != nil || o.caddy != "caddy" || o.noCaddy {
		t.Errorf("default Caddy: %q, no-caddy %v, %v; want caddy from PATH", o.caddy, o.noCaddy, err)
	}
	o, err = parse(t, "-caddy", "/opt/caddy", "-no-caddy")
	if err != nil || o.caddy != "/opt/caddy" || !o.noCaddy {
		t.Errorf("-caddy /opt/caddy -no-caddy: %q, %v, %v", o.caddy, o.noCaddy, err)
	}
	for _, bad := range [][]string{
		{"-scenarios", "nope"},
		{"-scenarios", "large-4x4,large-4x4"},
		{"-reps", "0"},
		{"-d", "0s"},
		{"extra"},
	} {
		if _, err := parse(t, bad...); err == nil {
			t.Errorf("parse(%q) = nil error, want one", bad)
		}
	}
}

func TestOrderRotates(t *testing.T) {
	three := []target{direct, spooky, caddy}
	two := []target{direct, spooky}
	tests := []struct {
		targets []target
		rep     int
		want    []target
	}{
		{three, 1, []target{direct, spooky, caddy}},
		{three, 2, []target{spooky, caddy, direct}},
		{three, 3, []target{caddy, direct, spooky}},
		{three, 4, []target{direct, spooky, caddy}},
		// Without Caddy the order flips every repetition.
		{two, 1, []target{direct, spooky}},
		{two, 2, []target{spooky, direct}},
		{two, 3, []target{direct, spooky}},
		{[]target{spooky, caddy}, 2, []target{caddy, spooky}},
		{nil, 1, nil},
	}
	for _, tt := range tests {
		if got := order(tt.targets, tt.rep); !slices.Equal(got, tt.want) {
			t.Errorf("order(%v, %d) = %v, want %v", tt.targets, tt.rep, got, tt.want)
		}
	}
	// The targets given are left as they were.
	order(three, 2)
	if !slices.Equal(three, []target{direct, spooky, caddy}) {
		t.Errorf("order changed its argument: %v", three)
	}
}

func TestPoolFor(t *testing.T) {
	mem10k := scenarioNamed(t, "mem-10k")
	if mem10k.inFlight() != 10000 {
		t.Fatalf("mem-10k = %+v", mem10k)
	}
	o, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	// The throughput scenarios share one spooky sized for the busiest of
	// them; a memory scenario gets twice its own streams.
	for sc, want := range map[string]int{"small-4x16": 512, "upload-4x4": 512, "tcp-small-4x16": 512, "mem-1k": 2000, "mem-10k": 20000} {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == sc })
		if got := o.poolFor(scenarios[i]); got != want {
			t.Errorf("poolFor(%s) = %d, want %d", sc, got, want)
		}
	}
	o, err = parse(t, "-pool-workers", "300")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.poolFor(mem10k); got != 300 {
		t.Errorf("with -pool-workers 300, poolFor(mem-10k) = %d, want 300", got)
	}
}

// TestSpookyConfigLoads checks that spooky's own loader accepts the config
// the bench writes, with the values the bench means.
func TestSpookyConfigLoads(t *testing.T) {
	c := spookyConfig{listen: "127.0.0.1:4443", admin: "127.0.0.1:9999", upstream: "127.0.0.1:9001", poolWorkers: 128}
	path := filepath.Join(t.TempDir(), "spooky.yaml")
	if err := os.WriteFile(path, []byte(c.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.yaml())
	}
	if cfg.Listen.Address != c.listen || cfg.Admin.Address != c.admin || cfg.Log.Level != "warn" ||
		cfg.Stages.Pool.Workers != 128 || cfg.Stages.Pool.Queue != 512 {
		t.Errorf("loaded %+v %+v %+v %+v", cfg.Listen, cfg.Admin, cfg.Log, cfg.Stages.Pool)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].Upstream != "bench" {
		t.Fatalf("routes = %+v", cfg.Routes)
	}
	up := cfg.Upstreams["bench"]
	if up == nil || up.Protocol != "h2c" || len(up.Endpoints) != 1 || up.Endpoints[0].Address != c.upstream {
		t.Errorf("upstream bench = %+v", up)
	}
}

func TestSpookyEnv(t *testing.T) {
	got := spookyEnv([]string{"PATH=/bin", "SPOOKY_LOG__LEVEL=debug", "HOME=/root", "SPOOKY_X=1"})
	if want := []string{"PATH=/bin", "HOME=/root"}; !slices.Equal(got, want) {
		t.Errorf("spookyEnv = %q, want %q", got, want)
	}
}

func TestShellCommand(t *testing.T) {
	got := shellCommand([]string{"bin/benchrun", "-scenarios", "a,b", "-results", "my results.md", "it's"})
	want := `bin/benchrun -scenarios a,b -results 'my results.md' 'it'\''s'`
	if got != want {
		t.Errorf("shellCommand = %s, want %s", got, want)
	}
}

func TestSetupLine(t *testing.T) {
	o, err := parse(t, "-scenarios", "small-4x16,mem-10k", "-reps", "2", "-d", "3s")
	if err != nil {
		t.Fatal(err)
	}
	got := setupLine(o, "2.6.2", "", "0.50 0.40 0.30")
	for _, want := range []string{
		"2 rep(s) × 3s measured after 1s warm-up per target (memory scenarios: every stream held, within 30s, then 3s more), order rotated each repetition; ",
		"spooky pool workers 128, mem-10k 20000; Caddy 2.6.2; ",
		"load average before: 0.50 0.40 0.30; ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("setup line lacks %q:\n%s", want, got)
		}
	}
	if got := setupLine(o, "", "caddy is not installed", "x"); !strings.Contains(got, "; no Caddy (caddy is not installed); ") {
		t.Errorf("setup line without Caddy:\n%s", got)
	}
}
