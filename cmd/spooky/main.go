// Command spooky terminates HTTP/3 and forwards requests over warm HTTP/2
// connections to upstream backends.
//
//	spooky -config config.yaml   run the daemon
//	spooky -check config.yaml    validate a config, print OK or every error
//
// SIGINT and SIGTERM drain in-flight requests and stop. Exit codes: 0 after
// a clean stop or a valid check, 1 for a bad config or a failed check,
// 2 for bad flags, 3 when a stage kept failing and the daemon gave up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"spooky/config"
	"spooky/stages"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("spooky", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "config file to run with")
	checkPath := fs.String("check", "", "validate this config file, print OK or every error, and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *checkPath != "" {
		return check(*checkPath, stdout, stderr)
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		printConfigErrors(stderr, *configPath, err)
		return 1
	}
	tuneGC()
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	setLevel(level, cfg.Log.Level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP's default action ends the process: it is caught from here on,
	// so that one arriving while the control plane is not listening (at
	// start, or during a restart) is lost rather than fatal.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	d, err := newDaemon(*configPath, cfg, log)
	if err == nil {
		d.control.AddTarget(levelTarget{level})
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	tcp := "off"
	if a := d.listener.TCPAddr(); a != nil {
		tcp = a.String()
	}
	log.Info("spooky serving", "http3", d.listener.Addr().String(), "https", tcp, "admin", cfg.Admin.Address, "config", *configPath)
	if err := d.run(ctx); err != nil {
		log.Error("stopped uncleanly", "err", err)
		if errors.Is(err, errStuck) {
			return 4
		}
		return 3
	}
	log.Info("spooky stopped")
	return 0
}

func check(path string, stdout, stderr io.Writer) int {
	if _, err := config.Load(path); err != nil {
		printConfigErrors(stderr, path, err)
		return 1
	}
	fmt.Fprintln(stdout, "OK")
	return 0
}

// printConfigErrors writes one problem a line.
func printConfigErrors(w io.Writer, path string, err error) {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		fmt.Fprintf(w, "%s: %d problems:\n", path, len(joined.Unwrap()))
		for _, e := range joined.Unwrap() {
			fmt.Fprintf(w, "  %v\n", e)
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}

// defaultGCPercent is the GOGC spooky runs with unless GOGC is set. A
// proxy's heap is mostly short-lived per-request garbage over a small live
// set, so collecting at 4× the live heap instead of 2× trades a few tens
// of MiB for about a fifth less CPU per request (bench/RESULTS.md).
const defaultGCPercent = 400

func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// setLevel applies log.level; the config was validated, so slog knows it.
func setLevel(v *slog.LevelVar, level string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level)))
	v.Set(l)
}

// levelTarget applies log.level on every reload.
type levelTarget struct{ v *slog.LevelVar }

func (t levelTarget) SendControl(_ context.Context, c stages.Control) error {
	if rc, ok := c.(stages.Reconfigure); ok {
		setLevel(t.v, rc.Config.Log.Level)
		rc.Applied()
	}
	return nil
}
