package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadRunArgs runs a stand-in h3load that records its arguments and
// prints a canned result, to check what the bench asks of the load
// generator and how it reads the answer.
func TestLoadRunArgs(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$@\" > " + argsFile + "\n" +
		`echo '{"requests": 500, "duration_ns": 2000000000, "requests_per_sec": 250, "latency": {"p50_ns": 1000, "p99_ns": 9000},` +
		` "processes": [{"pid": 7, "cpu_percent": 25, "rss_bytes": 4096}]}'` + "\n"
	h3load := filepath.Join(dir, "h3load")
	if err := os.WriteFile(h3load, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	upload := scenarioNamed(t, "upload-4x4")
	res, err := loadRun{
		h3load: h3load, url: "https://127.0.0.1:1/echo", sc: upload,
		warmup: time.Second, duration: 2 * time.Second, pids: []int{7, 8},
	}.run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 500 || res.Duration != 2*time.Second || res.Latency.P99 != 9000 ||
		len(res.Processes) != 1 || res.Processes[0].CPUPercent != 25 {
		t.Errorf("result = %+v", res)
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "-json -d 2s -warmup 1s -c 4 -s 4 -X POST -body-size 1048576 -pid 7,8 https://127.0.0.1:1/echo"
	if got := strings.TrimSpace(string(args)); got != want {
		t.Errorf("h3load args = %s, want %s", got, want)
	}
}

// scenarioNamed returns the scenario of that name.
func scenarioNamed(t *testing.T, name string) scenario {
	t.Helper()
	scs, err := selectScenarios(name)
	if err != nil {
		t.Fatal(err)
	}
	return scs[0]
}

func TestLoadRunArgsByScenario(t *testing.T) {
	tests := []struct {
		scenario string
		want     string
	}{
		{"small-4x16", "-json -d 5s -warmup 1s -c 4 -s 16 -X GET https://h/p"},
		{"upload-4x4", "-json -d 5s -warmup 1s -c 4 -s 4 -X POST -body-size 1048576 https://h/p"},
		// The TCP scenario asks for HTTP/2 over TLS; the others leave
		// h3load at its HTTP/3 default.
		{"tcp-small-4x16", "-json -d 5s -warmup 1s -c 4 -s 16 -X GET -proto h2 https://h/p"},
		{"mem-1k", "-json -d 5s -warmup 1s -c 10 -s 100 -X GET https://h/p"},
	}
	for _, tt := range tests {
		r := loadRun{url: "https://h/p", sc: scenarioNamed(t, tt.scenario), warmup: time.Second, duration: 5 * time.Second}
		if got := strings.Join(r.args(), " "); got != tt.want {
			t.Errorf("%s: args = %s, want %s", tt.scenario, got, tt.want)
		}
	}
}

func TestLoadRunFailure(t *testing.T) {
	h3load := filepath.Join(t.TempDir(), "h3load")
	if err := os.WriteFile(h3load, []byte("#!/bin/sh\necho 'h3load: no route' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := loadRun{h3load: h3load, url: "https://127.0.0.1:1/", sc: scenarios[0], duration: time.Second}.run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("err = %v, want one quoting h3load's stderr", err)
	}
}

// TestLoadRunStop ends a run early through its stop channel: the stand-in
// h3load, like the real one, prints what it measured when interrupted.
func TestLoadRunStop(t *testing.T) {
	h3load := filepath.Join(t.TempDir(), "h3load")
	script := "#!/bin/sh\n" +
		`trap 'echo "{\"requests\": 0, \"duration_ns\": 1500000000}"; exit 0' INT` + "\n" +
		"i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nexit 1\n"
	if err := os.WriteFile(h3load, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	res, err := loadRun{h3load: h3load, url: "https://127.0.0.1:1/slow", sc: scenarioNamed(t, "mem-10k"), duration: time.Minute, stop: stop}.run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Left alone, the stand-in fails after 30s without printing anything.
	if res.Duration != 1500*time.Millisecond {
		t.Errorf("result = %+v, want the one printed on interrupt", res)
	}
}

func TestGCSetting(t *testing.T) {
	for _, tt := range []struct{ gogc, memlimit, want string }{
		{"", "", "GC defaults (spooky GOGC=400, Caddy 100)"},
		{"100", "", "GOGC=100 from the environment, for spooky and Caddy alike"},
		{"", "1GiB", "GOMEMLIMIT=1GiB from the environment, for spooky and Caddy alike"},
	} {
		if got := gcSetting(tt.gogc, tt.memlimit); got != tt.want {
			t.Errorf("gcSetting(%q, %q) = %q, want %q", tt.gogc, tt.memlimit, got, tt.want)
		}
	}
}
