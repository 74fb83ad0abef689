// Package control owns the running configuration: it watches the config
// file and SIGHUP, loads and validates a new config in full, and hands each
// valid snapshot to every stage (its Targets), one after another, each on
// its priority lane. An invalid config is rejected, logged and shown on
// /debug/config; the running one stays.
package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/knadh/koanf/providers/file"

	"spooky/config"
	"spooky/stages"
	"spooky/supervisor"
)

// Target is a stage that takes control messages; every mailbox is one.
type Target interface {
	SendControl(ctx context.Context, c stages.Control) error
}

// FileReloader is a Target with files of its own besides the config (the
// listener's certificates). On SIGHUP, when the config file is unchanged,
// the control plane asks it to read them again; it reports how that went
// through CertificatesReloaded, and returns the same error.
type FileReloader interface {
	ReloadFiles() error
}

// Status is the control plane's view for /debug/config.
type Status struct {
	Version    int       `json:"version"`
	SHA256     string    `json:"sha256"`
	LoadedAt   time.Time `json:"loaded_at"`
	LastResult string    `json:"last_result"` // "ok" or "error"
	LastError  string    `json:"last_error,omitempty"`
	// CertificateError is why the certificate files on disk were last
	// rejected (the old pair is still served); empty once they load.
	CertificateError string    `json:"certificate_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	ReloadsOK        uint64    `json:"reloads_ok"`
	ReloadsError     uint64    `json:"reloads_error"`
}

// Reloads counts the reloads applied and the reloads that failed.
func (s Status) Reloads() (ok, failed uint64) { return s.ReloadsOK, s.ReloadsError }

// settle is how long the file must stay quiet after a change before it is
// read: editors and `cp` write in several steps, and reading between them
// would reject a half-written file.
const settle = 150 * time.Millisecond

// applyWait bounds the wait for one stage to apply a config.
const applyWait = 2 * time.Second

// Control is the control-plane stage.
type Control struct {
	path    string
	log     *slog.Logger
	targets []Target

	reloading sync.Mutex // one reload at a time: file watch, SIGHUP and callers race
	mu        sync.Mutex
	current   *config.Config
	status    Status
	// configFailed is set while the last load of the config file failed:
	// an unchanged file is then loaded again.
	configFailed bool
}

// New returns the control plane for the config at path, which was loaded
// as cfg. Targets are added with AddTarget before Serve.
func New(path string, cfg *config.Config, log *slog.Logger) *Control {
	c := &Control{path: path, log: log, current: cfg}
	c.status = Status{Version: 1, SHA256: fileSum(path), LoadedAt: time.Now(), LastResult: "ok"}
	return c
}

// AddTarget adds a stage that must hear of every new config.
func (c *Control) AddTarget(t Target) { c.targets = append(c.targets, t) }

// Status reports the last reload.
func (c *Control) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Inspect shows the control plane on /debug/stages; it has no mailbox.
func (c *Control) Inspect() stages.Info { return stages.Info{} }

// Serve reloads on SIGHUP and whenever the file changes, until ctx ends.
func (c *Control) Serve(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	changed := make(chan struct{}, 1)
	watcher := c.watch(ctx, changed)
	defer watcher.Wait()
	return c.loop(ctx, hup, changed)
}

// loop reloads on every signal from hup, and once the file has stayed
// quiet for settle after a signal from changed, until ctx ends.
func (c *Control) loop(ctx context.Context, hup <-chan os.Signal, changed <-chan struct{}) error {
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			c.log.Info("SIGHUP: reloading config and certificates", "path", c.path)
			c.Hangup(ctx)
		case <-changed:
			debounce = time.After(settle)
		case <-debounce:
			debounce = nil
			c.Reload(ctx)
		}
	}
}

// watch keeps a file watch on the config until ctx ends, re-arming it when
// it breaks (the file was removed or renamed away, as some editors do), and
// signals changed on every write or replacement.
func (c *Control) watch(ctx context.Context, changed chan<- struct{}) *sync.WaitGroup {
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	// A panic ends the file watch (SIGHUP still reloads), not the process.
	wg.Go(supervisor.Guard(c.log, "config file watch", func() {
		for ctx.Err() == nil {
			broken := make(chan error, 1)
			f := file.Provider(c.path)
			err := f.Watch(func(_ any, err error) {
				if err == nil {
					notify()
					return
				}
				select {
				case broken <- err:
				default:
				}
			})
			if err == nil {
				// The file may have changed while nothing watched
				// it (before the first watch, or between two); a
				// reload of an unchanged file does nothing.
				notify()
				select {
				case <-ctx.Done():
				case err = <-broken:
				}
				f.Unwatch()
			}
			if err != nil && ctx.Err() == nil {
				c.log.Debug("config watch re-arming", "path", c.path, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}, nil))
	return &wg
}

// Hangup is what SIGHUP does: Reload and, when the config file is
// unchanged, ask every FileReloader to read its files again, so that a
// renewed certificate is served though the config names the same files.
func (c *Control) Hangup(ctx context.Context) error {
	c.reloading.Lock()
	defer c.reloading.Unlock()
	applied, err := c.reloadLocked(ctx)
	if applied || err != nil {
		return err
	}
	var errs []error
	for _, t := range c.targets {
		if f, ok := t.(FileReloader); ok {
			errs = append(errs, f.ReloadFiles())
		}
	}
	return errors.Join(errs...)
}

// Reload loads the file and, when it is valid and differs from the running
// config, hands it to every target. It returns why it did not: the
// validation error, the error of a target that refused it, or ctx's.
func (c *Control) Reload(ctx context.Context) error {
	c.reloading.Lock()
	defer c.reloading.Unlock()
	_, err := c.reloadLocked(ctx)
	return err
}

// reloadLocked is Reload; applied is false when the file was unchanged.
func (c *Control) reloadLocked(ctx context.Context) (applied bool, err error) {
	sum := fileSum(c.path)
	c.mu.Lock()
	unchanged := sum != "" && sum == c.status.SHA256 && !c.configFailed
	c.mu.Unlock()
	if unchanged {
		return false, nil
	}
	cfg, err := config.Load(c.path)
	if err != nil {
		c.failed(err)
		c.log.Error("config rejected; the running config stays", "path", c.path, "err", err)
		return false, err
	}
	// Stages apply it one after another, in the order added (the
	// listener, then downstream first), each waiting for the one before:
	// a stage that is down or slow holds the others back for at most
	// applyWait.
	for _, t := range c.targets {
		rc := stages.Reconfigure{Config: cfg, Done: make(chan struct{})}
		// A stage whose control lane stays full is stuck: the send is
		// bounded like the wait for the stage to apply it.
		sendCtx, cancel := context.WithTimeout(ctx, applyWait)
		err := t.SendControl(sendCtx, rc)
		cancel()
		if err != nil {
			// The first target is the listener, which fails only on a
			// new listen.address it cannot bind or a certificate it
			// cannot load: then nothing has changed anywhere. A later
			// failure is a stage that went away mid-broadcast (the
			// daemon is stopping) or one stuck with its control lane
			// full; the stages before it keep the new config, the
			// status says the reload failed, and reloading the same
			// file applies it again everywhere.
			err = fmt.Errorf("control: applying config: %w", err)
			c.failed(err)
			c.log.Error("config not applied", "path", c.path, "err", err)
			return false, err
		}
		select {
		case <-rc.Done:
		case <-time.After(applyWait):
			c.log.Warn("a stage is slow to apply the new config; going on", "version", c.Status().Version+1)
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	c.mu.Lock()
	c.current = cfg
	c.status.Version++
	// The listener loaded every certificate the config names.
	c.status.SHA256, c.status.LoadedAt, c.status.LastResult, c.status.LastError = sum, time.Now(), "ok", ""
	c.status.CertificateError, c.configFailed = "", false
	c.status.ReloadsOK++
	version := c.status.Version
	c.mu.Unlock()
	c.log.Info("config reloaded", "path", c.path, "version", version, "sha256", sum)
	return true, nil
}

// failed records a reload that failed: rejected, or refused by a target.
func (c *Control) failed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.LastResult, c.status.LastError, c.status.LastErrorAt = "error", err.Error(), time.Now()
	c.status.ReloadsError++
	c.configFailed = true
}

// CertificatesReloaded records a reload of the certificate files that no
// new config asked for (their files changed, or SIGHUP): it counts as a
// reload, and a failure shows on /debug/config as the last error and as
// CertificateError until the files load.
func (c *Control) CertificatesReloaded(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		msg := "certificates: " + err.Error()
		c.status.LastResult, c.status.LastError, c.status.LastErrorAt = "error", msg, time.Now()
		c.status.CertificateError = msg
		c.status.ReloadsError++
		return
	}
	c.status.ReloadsOK++
	if c.status.CertificateError != "" {
		c.status.CertificateError = ""
		if !c.configFailed {
			c.status.LastResult, c.status.LastError = "ok", ""
		}
	}
}

func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
