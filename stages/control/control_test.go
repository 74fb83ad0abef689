package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"spooky/config"
	"spooky/stages"
)

// configDoc is a valid config whose router has workers workers, so that
// each value is a different file.
func configDoc(workers int) string {
	return fmt.Sprintf(`stages:
  router: { workers: %d }
routes:
  - upstream: app
upstreams:
  app:
    endpoints:
      - address: 127.0.0.1:9001
`, workers)
}

// invalidDoc routes to a group that does not exist.
const invalidDoc = `routes:
  - upstream: nowhere
upstreams:
  app:
    endpoints:
      - address: 127.0.0.1:9001
`

// writeConfig replaces the file at path with doc in one rename, so that a
// watch never sees it half written.
func writeConfig(t *testing.T, path, doc string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// logs keeps what the control plane logs.
type logs struct {
	mu      sync.Mutex
	records []string // "LEVEL message"
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Level.String()+" "+r.Message)
	return nil
}

func (l *logs) has(record string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.records, record)
}

// newControl writes doc and returns a control plane for it, with the
// config it started with.
func newControl(t *testing.T, doc string) (*Control, *config.Config, *logs) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spooky.yaml")
	writeConfig(t, path, doc)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	l := &logs{}
	return New(path, cfg, slog.New(l)), cfg, l
}

// target is a stage the control plane configures.
type target struct {
	name string
	err  error // SendControl fails with it and takes nothing
	// ack makes the target apply each config as it takes it; without
	// it, the test calls Applied on what got received, or never does.
	ack bool
	got chan stages.Reconfigure
}

func newTarget(name string, ack bool) *target {
	return &target{name: name, ack: ack, got: make(chan stages.Reconfigure, 8)}
}

func (tg *target) SendControl(_ context.Context, c stages.Control) error {
	if tg.err != nil {
		return tg.err
	}
	rc := c.(stages.Reconfigure)
	tg.got <- rc
	if tg.ack {
		rc.Applied()
	}
	return nil
}

// next returns the config the target took, failing if it took none.
func (tg *target) next(t *testing.T) stages.Reconfigure {
	t.Helper()
	select {
	case rc := <-tg.got:
		return rc
	default:
		t.Fatalf("target %s has no config", tg.name)
		return stages.Reconfigure{}
	}
}

// none fails if the target took a config.
func (tg *target) none(t *testing.T) {
	t.Helper()
	if n := len(tg.got); n > 0 {
		t.Fatalf("target %s took %d configs; want none", tg.name, n)
	}
}

func TestReloadAppliesStageByStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _ := newControl(t, configDoc(1))
		first, second := newTarget("first", false), newTarget("second", true)
		c.AddTarget(first)
		c.AddTarget(second)
		writeConfig(t, c.path, configDoc(2))

		done := make(chan error, 1)
		go func() { done <- c.Reload(t.Context()) }()
		synctest.Wait()
		rc := first.next(t)
		second.none(t) // not before the first stage applied it
		rc.Applied()
		synctest.Wait()
		if got := second.next(t); got.Config != rc.Config {
			t.Error("the stages got different snapshots")
		}
		if err := <-done; err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if rc.Config.Stages.Router.Workers != 2 {
			t.Errorf("applied router workers %d, want 2", rc.Config.Stages.Router.Workers)
		}
		st := c.Status()
		if st.Version != 2 || st.LastResult != "ok" || st.ReloadsOK != 1 || st.ReloadsError != 0 || st.SHA256 != fileSum(c.path) {
			t.Errorf("status %+v", st)
		}
		if c.current != rc.Config {
			t.Error("the running config is not the one applied")
		}
	})
}

func TestReloadWithAFailingStage(t *testing.T) {
	// The first target is the listener, which fails when it cannot bind
	// a new listen.address; a later one fails when its stage went away.
	for failing := range 3 {
		t.Run(fmt.Sprintf("target %d of 3", failing), func(t *testing.T) {
			c, old, logs := newControl(t, configDoc(1))
			oldSum := fileSum(c.path)
			errStage := errors.New("address in use")
			var targets []*target
			for i := range 3 {
				tg := newTarget(fmt.Sprint(i), true)
				if i == failing {
					tg.err = errStage
				}
				targets = append(targets, tg)
				c.AddTarget(tg)
			}
			writeConfig(t, c.path, configDoc(2))

			err := c.Reload(context.Background())
			if !errors.Is(err, errStage) || !strings.HasPrefix(err.Error(), "control: applying config: ") {
				t.Fatalf("Reload: %v; want the stage's error", err)
			}
			// The targets before the failing one run the new config;
			// the others never hear of it.
			for i, tg := range targets {
				if i < failing {
					tg.next(t)
				}
				tg.none(t)
			}
			st := c.Status()
			if st.LastResult != "error" || st.LastError != err.Error() || st.LastErrorAt.IsZero() ||
				st.ReloadsError != 1 || st.ReloadsOK != 0 || st.Version != 1 || st.SHA256 != oldSum {
				t.Errorf("status %+v", st)
			}
			if c.current != old {
				t.Error("the running config changed")
			}
			if !logs.has("ERROR config not applied") {
				t.Error("the failure was not logged")
			}

			// The same file again, once the stage is back: a failed
			// reload is not taken for the running config, so it is
			// applied in full.
			targets[failing].err = nil
			if err := c.Reload(context.Background()); err != nil {
				t.Fatalf("Reload again: %v", err)
			}
			for _, tg := range targets {
				tg.next(t)
			}
			st = c.Status()
			if st.LastResult != "ok" || st.LastError != "" || st.Version != 2 || st.ReloadsOK != 1 || st.ReloadsError != 1 {
				t.Errorf("status after the second reload %+v", st)
			}
		})
	}
}

func TestReloadGoesOnPastAStageThatNeverApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, logs := newControl(t, configDoc(1))
		silent1, silent2, last := newTarget("silent1", false), newTarget("silent2", false), newTarget("last", true)
		c.AddTarget(silent1)
		c.AddTarget(silent2)
		c.AddTarget(last)
		writeConfig(t, c.path, configDoc(2))

		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- c.Reload(t.Context()) }()
		synctest.Wait()
		silent1.next(t)
		silent2.none(t)

		// Each stage that does not apply holds the others back for
		// applyWait, no more.
		time.Sleep(applyWait - time.Nanosecond)
		synctest.Wait()
		silent2.none(t)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		silent2.next(t)
		last.none(t)
		time.Sleep(applyWait)
		synctest.Wait()
		last.next(t)

		if err := <-done; err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if took := time.Since(start); took != 2*applyWait {
			t.Errorf("Reload took %v, want %v", took, 2*applyWait)
		}
		if st := c.Status(); st.Version != 2 || st.LastResult != "ok" {
			t.Errorf("status %+v", st)
		}
		if !logs.has("WARN a stage is slow to apply the new config; going on") {
			t.Error("no warning about the slow stage")
		}
	})
}

func TestInvalidConfigIsRejected(t *testing.T) {
	c, old, logs := newControl(t, configDoc(1))
	oldSum := fileSum(c.path)
	tg := newTarget("stage", true)
	c.AddTarget(tg)
	writeConfig(t, c.path, invalidDoc)

	err := c.Reload(context.Background())
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Key != "routes[0].upstream" {
		t.Fatalf("Reload: %v; want the config error naming routes[0].upstream", err)
	}
	tg.none(t)
	st := c.Status()
	if st.LastResult != "error" || st.LastError != err.Error() || st.ReloadsError != 1 || st.Version != 1 || st.SHA256 != oldSum {
		t.Errorf("status %+v", st)
	}
	if c.current != old {
		t.Error("the running config changed")
	}
	if !logs.has("ERROR config rejected; the running config stays") {
		t.Error("the rejection was not logged")
	}

	// The same broken file is read and rejected again.
	if err := c.Reload(context.Background()); err == nil {
		t.Fatal("the broken file was accepted on the second reload")
	}
	if st := c.Status(); st.ReloadsError != 2 {
		t.Errorf("reloads_error %d, want 2", st.ReloadsError)
	}

	// Fixed: the error is cleared, its time kept.
	writeConfig(t, c.path, configDoc(3))
	if err := c.Reload(context.Background()); err != nil {
		t.Fatalf("Reload of the fixed file: %v", err)
	}
	tg.next(t)
	st = c.Status()
	if st.LastResult != "ok" || st.LastError != "" || st.LastErrorAt.IsZero() || st.Version != 2 || st.ReloadsOK != 1 {
		t.Errorf("status after the fix %+v", st)
	}
}

func TestUnchangedFileIsNotApplied(t *testing.T) {
	c, _, _ := newControl(t, configDoc(1))
	tg := newTarget("stage", true)
	c.AddTarget(tg)
	// Rewritten with the same bytes, as a touch or an editor's save does.
	writeConfig(t, c.path, configDoc(1))
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	tg.none(t)
	if st := c.Status(); st.Version != 1 || st.ReloadsOK != 0 {
		t.Errorf("status %+v", st)
	}
}

// runLoop runs c's reload loop on channels the test sends to, until the
// test ends.
func runLoop(t *testing.T, c *Control) (hup chan os.Signal, changed chan struct{}) {
	hup, changed = make(chan os.Signal, 1), make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.loop(ctx, hup, changed) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("loop: %v", err)
		}
	})
	return hup, changed
}

func TestSIGHUPReloadsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, logs := newControl(t, configDoc(1))
		tg := newTarget("stage", true)
		c.AddTarget(tg)
		hup, _ := runLoop(t, c)
		writeConfig(t, c.path, configDoc(2))

		start := time.Now()
		hup <- syscall.SIGHUP
		synctest.Wait()
		if rc := tg.next(t); rc.Config.Stages.Router.Workers != 2 {
			t.Errorf("router workers %d, want 2", rc.Config.Stages.Router.Workers)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("SIGHUP reloaded after %v", waited)
		}
		if !logs.has("INFO SIGHUP: reloading config and certificates") {
			t.Error("SIGHUP not logged")
		}
	})
}

func TestFileChangeReloadsOnceTheFileIsQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _ := newControl(t, configDoc(1))
		tg := newTarget("stage", true)
		c.AddTarget(tg)
		_, changed := runLoop(t, c)
		writeConfig(t, c.path, configDoc(2))

		// A file written in steps signals a change per step; it is read
		// once, settle after the last.
		changed <- struct{}{}
		time.Sleep(settle / 2)
		synctest.Wait()
		tg.none(t)
		changed <- struct{}{}
		time.Sleep(settle - time.Nanosecond)
		synctest.Wait()
		tg.none(t)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		tg.next(t)
		tg.none(t)
		if st := c.Status(); st.Version != 2 || st.ReloadsOK != 1 {
			t.Errorf("status %+v", st)
		}
	})
}

func TestServeWatchesTheFile(t *testing.T) {
	c, _, _ := newControl(t, configDoc(1))
	tg := newTarget("stage", true)
	c.AddTarget(tg)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	// Whether the watch is armed before or after this write, it reloads:
	// a watch that starts looks at the file once.
	writeConfig(t, c.path, configDoc(2))
	select {
	case rc := <-tg.got:
		if rc.Config.Stages.Router.Workers != 2 {
			t.Errorf("router workers %d, want 2", rc.Config.Stages.Router.Workers)
		}
	case <-time.After(10 * time.Second): // a bound on a hang, not a timing check
		t.Fatal("the changed file was not reloaded")
	}
}

// fullLane is a target whose control lane is full: a send waits until its
// context ends.
type fullLane struct{}

func (fullLane) SendControl(ctx context.Context, _ stages.Control) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestReloadGivesUpOnAStageWhoseLaneStaysFull: a stage stuck with its
// control lane full holds a reload for applyWait, not for as long as the
// daemon runs; the reload fails, and so says the status.
func TestReloadGivesUpOnAStageWhoseLaneStaysFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _ := newControl(t, configDoc(1))
		c.AddTarget(fullLane{})
		writeConfig(t, c.path, configDoc(2))
		start := time.Now()
		if err := c.Reload(t.Context()); err == nil {
			t.Fatal("Reload succeeded past a stage that took nothing")
		}
		if took := time.Since(start); took != applyWait {
			t.Errorf("Reload took %v, want %v", took, applyWait)
		}
		if st := c.Status(); st.Version != 1 || st.LastResult != "error" {
			t.Errorf("status %+v; want version 1 and the error", st)
		}
	})
}

// fileTarget is a target with files of its own, as the listener's
// certificates: it counts the calls to ReloadFiles, failing them with err.
type fileTarget struct {
	*target
	mu      sync.Mutex
	reloads int
	err     error
}

func (f *fileTarget) ReloadFiles() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return f.err
}

func (f *fileTarget) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloads
}

func TestSIGHUPWithAnUnchangedConfigReloadsFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _ := newControl(t, configDoc(1))
		ft := &fileTarget{target: newTarget("listener", true)}
		c.AddTarget(ft)
		c.AddTarget(newTarget("stage", true))
		hup, changed := runLoop(t, c)

		// The file watch: an unchanged file does nothing at all.
		changed <- struct{}{}
		time.Sleep(2 * settle) // synctest's clock: no real wait
		synctest.Wait()
		if n := ft.count(); n != 0 {
			t.Errorf("a file event reloaded the files %d times", n)
		}

		// SIGHUP, the config unchanged: the files are read again, and
		// no config is sent.
		hup <- syscall.SIGHUP
		synctest.Wait()
		if n := ft.count(); n != 1 {
			t.Errorf("SIGHUP reloaded the files %d times, want once", n)
		}
		ft.none(t)

		// SIGHUP, the config changed: the config is applied (the
		// listener loads its certificates with it), and that is all.
		writeConfig(t, c.path, configDoc(2))
		hup <- syscall.SIGHUP
		synctest.Wait()
		ft.next(t)
		if n := ft.count(); n != 1 {
			t.Errorf("ReloadFiles called %d times after a changed config, want no more", n)
		}
	})
}

func TestHangupReturnsTheFilesError(t *testing.T) {
	c, _, _ := newControl(t, configDoc(1))
	ft := &fileTarget{target: newTarget("listener", true), err: errors.New("key mismatch")}
	c.AddTarget(ft)
	if err := c.Hangup(context.Background()); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("Hangup = %v, want the files' error", err)
	}
}

func TestCertificateErrorsShowInStatus(t *testing.T) {
	c, _, _ := newControl(t, configDoc(1))
	c.AddTarget(newTarget("stage", true))

	c.CertificatesReloaded(errors.New("tls: private key does not match public key"))
	st := c.Status()
	if st.LastResult != "error" || !strings.Contains(st.LastError, "certificates: tls: private key does not match") ||
		st.CertificateError != st.LastError || st.LastErrorAt.IsZero() || st.ReloadsError != 1 {
		t.Fatalf("status after a rejected certificate: %+v", st)
	}
	// The config file did not change: a file event still does nothing,
	// and the certificate error stays.
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Version != 1 || st.CertificateError == "" {
		t.Errorf("status after an unchanged reload: %+v", st)
	}

	c.CertificatesReloaded(nil)
	st = c.Status()
	if st.LastResult != "ok" || st.LastError != "" || st.CertificateError != "" || st.ReloadsOK != 1 {
		t.Errorf("status after the certificate loaded: %+v", st)
	}

	// A config error is not cleared by a certificate that loads.
	writeConfig(t, c.path, invalidDoc)
	c.Reload(context.Background())
	c.CertificatesReloaded(nil)
	if st := c.Status(); st.LastResult != "error" || !strings.Contains(st.LastError, "routes[0].upstream") {
		t.Errorf("status after a bad config and a good certificate: %+v", st)
	}
}
