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
		{nil, 3, 5 * time.Second, "small-4x16,small-32x8,large-4x4,upload-4x4", true, 512},
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

func TestOrderAlternates(t *testing.T) {
	for rep, want := range map[int][]target{1: {direct, spooky}, 2: {spooky, direct}, 3: {direct, spooky}} {
		if got := order(rep); !slices.Equal(got, want) {
			t.Errorf("order(%d) = %v, want %v", rep, got, want)
		}
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
