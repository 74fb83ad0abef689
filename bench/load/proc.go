package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Process is the resource use of one watched process over the measured
// window.
type Process struct {
	PID int `json:"pid"`
	// CPUPercent is user plus system CPU time over wall time, in percent of
	// one core: 250 means two and a half cores busy.
	CPUPercent float64 `json:"cpu_percent"`
	// RSSBytes is the resident set size at the end of the window.
	RSSBytes int64 `json:"rss_bytes"`
	// IdleRSSBytes is the resident set size before the run sent any load,
	// warm-up included.
	IdleRSSBytes int64 `json:"idle_rss_bytes"`
	// PeakRSSBytes is the most the resident set reached from before the
	// run's load to the end of the window (VmHWM, reset when the run
	// starts through /proc/PID/clear_refs); zero when it could not be
	// reset, since the process's lifetime peak would mean something else.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// procSample is one reading of a process from /proc.
type procSample struct {
	pid       int
	cpu       time.Duration
	rssBytes  int64
	peakBytes int64 // VmHWM: the high-water mark of the resident set
}

// clockTick is the unit of the CPU times in /proc/PID/stat. Linux fixes
// USER_HZ at 100 for user space on every architecture Go supports, so it is
// not read through sysconf (which would need cgo).
const clockTick = 10 * time.Millisecond

func sampleProcesses(pids []int) ([]procSample, error) {
	samples := make([]procSample, len(pids))
	for i, pid := range pids {
		s, err := sampleProcess(pid)
		if err != nil {
			return nil, err
		}
		samples[i] = s
	}
	return samples, nil
}

func sampleProcess(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("load: process %d: %w", pid, err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("load: /proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, fmt.Errorf("load: process %d: %w", pid, err)
	}
	rss, err := parseStatusKB(status, "VmRSS:")
	if err != nil {
		return procSample{}, fmt.Errorf("load: /proc/%d/status: %w", pid, err)
	}
	peak, err := parseStatusKB(status, "VmHWM:")
	if err != nil {
		return procSample{}, fmt.Errorf("load: /proc/%d/status: %w", pid, err)
	}
	return procSample{pid: pid, cpu: cpu, rssBytes: rss, peakBytes: peak}, nil
}

// resetPeakRSS sets the resident-set high-water mark (VmHWM) of every
// process to its current resident set (proc(5), clear_refs value 5, Linux
// 4.0 and later), so that the next reading of it is the peak since now. It
// reports for each process whether that worked: writing clear_refs takes
// the same user as the process.
func resetPeakRSS(pids []int) []bool {
	ok := make([]bool, len(pids))
	for i, pid := range pids {
		ok[i] = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	}
	return ok
}

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat
// (proc(5)). The command name in field 2 may hold spaces and parentheses,
// so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no command name")
	}
	// After the name come state (field 3) … utime (14) and stime (15).
	fields := bytes.Fields(stat[end+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	var ticks int64
	for _, f := range [][]byte{fields[utime], fields[stime]} {
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// parseStatusKB returns the field named field ("VmRSS:", "VmHWM:") in
// bytes from the contents of /proc/PID/status. A zombie has no such lines
// and uses no memory: zero.
func parseStatusKB(status []byte, field string) (int64, error) {
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		value, ok := bytes.CutPrefix(line, []byte(field))
		if !ok {
			continue
		}
		kb, ok := bytes.CutSuffix(bytes.TrimSpace(value), []byte(" kB"))
		if !ok {
			return 0, fmt.Errorf("%s %q: want a size in kB", field, value)
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(kb)), 10, 64)
		if err != nil {
			return 0, err
		}
		return n << 10, nil
	}
	return 0, nil
}

// usage turns readings at the start and end of a window of wall time d
// into per-process figures: idle holds the readings taken before the run
// sent any load, and peakReset whether each process's high-water mark was
// reset then.
func usage(idle, before, after []procSample, peakReset []bool, d time.Duration) []Process {
	out := make([]Process, len(after))
	for i, a := range after {
		out[i] = Process{PID: a.pid, RSSBytes: a.rssBytes, IdleRSSBytes: idle[i].rssBytes}
		if peakReset[i] {
			out[i].PeakRSSBytes = a.peakBytes
		}
		if d > 0 {
			out[i].CPUPercent = 100 * float64(a.cpu-before[i].cpu) / float64(d)
		}
	}
	return out
}
