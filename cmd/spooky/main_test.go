package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spooky/internal/testkit"
)

func TestCheckPrintsOKOrEveryProblem(t *testing.T) {
	b := startBackend(t, "b1")
	valid := writeConfig(t, spookyConfig(allRoute, map[string][]string{"app": {b.addr}}))
	invalid := writeConfig(t, `
listen: { address: "nowhere" }
stages: { pool: { workers: -1 } }
routes:
  - { match: { path_prefix: "/" }, upstream: missing }
upstreams:
  app: { endpoints: [ { address: "127.0.0.1:1" } ] }
`)
	for _, tc := range []struct {
		name, path string
		code       int
		want       []string
	}{
		{"valid", valid, 0, []string{"OK"}},
		{"invalid", invalid, 1, []string{
			"3 problems",
			`listen.address: "nowhere" is not valid; want host:port`,
			`stages.pool.workers: "-1" is not valid; want a whole number of at least 1`,
			`routes[0].upstream: "missing" is not valid; want one of the groups under upstreams: app`,
		}},
		{"missing file", filepath.Join(t.TempDir(), "nope.yaml"), 1, []string{"no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run([]string{"-check", tc.path}, &out, &out); code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, &out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, &out)
				}
			}
		})
	}
}

func TestBadFlagsExitTwo(t *testing.T) {
	if code := run([]string{"-no-such-flag"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("exit %d", code)
	}
}

// TestDaemonReloadsOnSIGHUPAndDrainsOnSIGTERM runs the real binary: a
// SIGHUP moves traffic to the backend the rewritten file names, and a
// SIGTERM lets a request in flight finish before the process exits 0: the
// backend holds that request until the daemon says it is draining.
func TestDaemonReloadsOnSIGHUPAndDrainsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "spooky")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	h3Addr, adminAddr := testkit.FreeAddr(t, "udp"), testkit.FreeAddr(t, "tcp")
	render := func(backend string) string {
		return "listen: { address: \"" + h3Addr + "\" }\nadmin: { address: \"" + adminAddr + "\" }\n" +
			"routes:\n" + allRoute + "upstreams:\n  app: { endpoints: [ { address: \"" + backend + "\" } ] }\n"
	}
	path := writeConfig(t, render(b1.addr))

	var logs syncBuffer
	cmd := exec.Command(bin, "-config", path)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})

	c := h3Client(t)
	url := "https://" + h3Addr
	backendOf := func() string {
		resp, err := c.Get(url + "/")
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	testkit.WaitFor(t, "b1 to answer through the daemon", func() bool { return backendOf() == "b1" })

	if err := os.WriteFile(path, []byte(render(b2.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "b2 to answer after SIGHUP", func() bool { return backendOf() == "b2" })
	var status struct {
		Version    int    `json:"version"`
		LastResult string `json:"last_result"`
	}
	resp, err := http.Get("http://" + adminAddr + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if status.Version != 2 || status.LastResult != "ok" {
		t.Fatalf("/debug/config %+v", status)
	}

	held := getInBackground(c, url+"/hold")
	testkit.Recv(t, b2.holding, "the request to reach the backend")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the daemon to log that it drains", func() bool { return strings.Contains(logs.String(), "msg=draining") })
	b2.releaseHeld()
	if got := testkit.Recv(t, held, "the request in flight to end"); got != "200 held\n from b2" {
		t.Errorf("in-flight request during drain: %q\n%s", got, &logs)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, &logs)
		}
	case <-time.After(testkit.Watchdog):
		t.Fatalf("still running %v after SIGTERM\n%s", testkit.Watchdog, &logs)
	}
}
