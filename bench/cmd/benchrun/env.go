package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
)

// spookyEnv is environ without SPOOKY_ overrides, so that spooky runs on
// the bench config and nothing else.
func spookyEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "SPOOKY_") {
			out = append(out, kv)
		}
	}
	return out
}

// gitCommit returns the short hash of HEAD, with "-dirty" when the working
// tree has changes (untracked files included), or "unknown" outside git.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	status, err := exec.Command("git", "status", "--porcelain").Output()
	if err != nil || len(strings.TrimSpace(string(status))) > 0 {
		commit += "-dirty"
	}
	return commit
}

// shellSafe matches arguments that need no quoting in a POSIX shell.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+-]+$`)

// shellCommand renders argv as a command line a POSIX shell would split
// back into argv.
func shellCommand(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		if shellSafe.MatchString(a) {
			quoted[i] = a
		} else {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}

// setupLine says in one line how the numbers were taken and on what;
// caddyVersion is what `caddy version` printed, or empty with why Caddy
// did not run; loadavg is the machine's load average before the bench
// started, which says whether something else was competing for it.
func setupLine(o options, caddyVersion, caddyWhy, loadavg string) string {
	pool := fmt.Sprint(o.poolWorkers)
	for _, sc := range o.scenarios {
		if sc.memory && o.poolFor(sc) != o.poolWorkers {
			pool += fmt.Sprintf(", %s %d", sc.name, o.poolFor(sc))
		}
	}
	peer := "Caddy " + caddyVersion
	if caddyVersion == "" {
		peer = "no Caddy (" + caddyWhy + ")"
	}
	shape := fmt.Sprintf("%v measured after %v warm-up per target", o.duration, o.warmup)
	if slices.ContainsFunc(o.scenarios, func(sc scenario) bool { return sc.memory }) {
		shape += fmt.Sprintf(" (memory scenarios: every stream held, within %v, then %v more)", memoryRampLimit, o.duration)
	}
	return fmt.Sprintf("%d rep(s) × %s, order rotated each repetition; "+
		"spooky pool workers %s; %s; %s; %d CPUs (%s) shared by h3load, the proxies and the backend; "+
		"load average before: %s; Linux %s; %s",
		o.reps, shape, pool, peer, gcSetting(os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT")),
		runtime.NumCPU(), cpuModel(), loadavg, kernel(), runtime.Version())
}

// gcSetting says what garbage collector setting the proxies run with:
// their own defaults (spooky GOGC=400, Caddy Go's 100) unless the
// environment the bench passes on sets one.
func gcSetting(gogc, memlimit string) string {
	var set []string
	if gogc != "" {
		set = append(set, "GOGC="+gogc)
	}
	if memlimit != "" {
		set = append(set, "GOMEMLIMIT="+memlimit)
	}
	if len(set) == 0 {
		return "GC defaults (spooky GOGC=400, Caddy 100)"
	}
	return strings.Join(set, " ") + " from the environment, for spooky and Caddy alike"
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
