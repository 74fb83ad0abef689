package h2

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// h2specPorts is how many ports h2specd may listen on, one per case of
// its client suite (57 in v2.2.1), with room for more.
const h2specPorts = 100

// TestH2Spec runs h2specd, the client half of h2spec (pinned in go.mod as
// a tool), against this package: for each case it listens on a port of its
// own, runs internal/h2specclient on the case's URL, plays a server that
// breaks the protocol in some way, and judges the frames the client sends
// back (RFC 7540 in h2spec's reading; RFC 9113 agrees on every case). Any
// failed case fails the test, with h2specd's report.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs h2specd")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, to build h2specd: %v", err)
	}
	dir := t.TempDir()
	if strings.ContainsAny(dir, " \t") {
		// h2specd splits its -e command at spaces.
		t.Skipf("temporary directory %q has a space", dir)
	}
	h2specd := filepath.Join(dir, "h2specd")
	client := filepath.Join(dir, "h2specclient")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, b := range [][2]string{
		{h2specd, "github.com/summerwind/h2spec/cmd/h2specd"},
		{client, "./internal/h2specclient"},
	} {
		if out, err := exec.CommandContext(ctx, goCmd, "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}

	// A case that fails takes h2specd's timeout (2 s) and the client's
	// (2.5 s): the context gives all of them time to.
	var out []byte
	for try := 0; ; try++ {
		from := freePorts(t, h2specPorts)
		cmd := exec.CommandContext(ctx, h2specd, "--from-port", strconv.Itoa(from), "--exec", client)
		cmd.WaitDelay = 5 * time.Second
		out, err = cmd.CombinedOutput()
		out = cleanH2SpecOutput(out)
		if err != nil && bytes.Contains(out, []byte("address already in use")) && try < 3 {
			continue // someone took a port since freePorts looked
		}
		if err != nil {
			t.Fatalf("h2specd: %v\n%s", err, out)
		}
		break
	}
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in h2specd's output:\n%s", out)
	}
	total, _ := strconv.Atoi(string(m[1]))
	passed, _ := strconv.Atoi(string(m[2]))
	if failed, _ := strconv.Atoi(string(m[4])); failed > 0 || total == 0 || passed != total {
		t.Fatalf("h2specd: %s\n%s", m[0], out)
	}
	t.Logf("h2specd: %s", m[0])
}

// freePorts returns the first of n consecutive TCP ports on 127.0.0.1
// that nothing listens on, below Linux's ephemeral range so that
// outgoing connections do not take them meanwhile.
func freePorts(t *testing.T, n int) int {
	t.Helper()
search:
	for range 50 {
		from := 20000 + rand.IntN(12000-n)
		for p := from; p < from+n; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				continue search
			}
			ln.Close()
		}
		return from
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

// cleanH2SpecOutput drops the colours of h2specd's report and the lines it
// logs without end once it has closed its listeners, as it exits.
func cleanH2SpecOutput(out []byte) []byte {
	out = regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAll(out, nil)
	var b bytes.Buffer
	for line := range bytes.Lines(out) {
		if !bytes.Contains(line, []byte("use of closed network connection")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}
