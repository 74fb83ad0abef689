package listener

// This file keeps the served certificates in step with their files.
//
// The files' directories are watched (fsnotify), not the files: a
// certificate is renewed by writing it in place, by renaming a new file
// over it (certbot, most tools), or by flipping a symbolic link
// (a Kubernetes secret's ..data, certbot's live/ links), and only the
// directory sees all three; the directories of what symbolic links point to
// are watched too. Any event in them, once they have been quiet for
// certSettle, re-reads every pair; certs.Store compares the files' content
// with what it serves, so an unrelated event costs one read of each file
// and nothing else. Events can be missed (a directory that did not exist
// yet, a watch that broke, a file system that sends none, such as some
// network mounts), so the files are also read every certPoll: a modest
// interval, since a renewal comes weeks before expiry, and reading a few
// PEM files that often costs nothing. A pair that does not load is logged
// and reported once (until its files change again), and the old pair
// stays.

import (
	"context"
	"time"

	"github.com/fsnotify/fsnotify"

	"spooky/certs"
)

// CertReporter is told how each reload of the certificate files that was
// not asked for by a new config went: nil when a renewed pair is now
// served, else why the files on disk were rejected (the old pair stays).
// The control plane implements it, so that /debug/config shows the error.
type CertReporter interface {
	CertificatesReloaded(err error)
}

const (
	// certSettle is how long the watched directories must stay quiet
	// before the files are read: a renewal writes several files.
	certSettle = 100 * time.Millisecond
	// certPoll is how often the files are read whatever the watch says.
	certPoll = 30 * time.Second
	// certRewatch is how long a failed watch waits before it tries again.
	certRewatch = 5 * time.Second
)

// ReportCertificates sets who hears of certificate reloads; call it before
// Serve.
func (l *Listener) ReportCertificates(r CertReporter) { l.certReport.Store(&r) }

// ReloadFiles reads the certificate files again and serves them if they
// changed and load; it returns why they did not load. It is what SIGHUP
// does when the config file is unchanged.
func (l *Listener) ReloadFiles() error {
	return l.reloadCertificates("SIGHUP")
}

// reloadCertificates reads the certificate files again, logs and reports
// what came of it, and returns the error of files that did not load.
func (l *Listener) reloadCertificates(why string) error {
	changed, err := l.certs.Reload()
	switch {
	case err != nil:
		l.log.Error("certificate files rejected; the old certificate stays", "why", why, "err", err)
	case changed:
		leaf := l.certs.Current().Leaf
		l.log.Info("certificate reloaded", "why", why, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	default:
		return nil
	}
	if r := l.certReport.Load(); r != nil && *r != nil {
		(*r).CertificatesReloaded(err)
	}
	return err
}

// certFilesMoved tells the watch that the files it should watch changed.
func (l *Listener) certFilesMoved() {
	select {
	case l.certsMoved <- struct{}{}:
	default:
	}
}

// watchCertificates watches the certificate files' directories, and reads
// the files every certPoll, until ctx ends.
func (l *Listener) watchCertificates(ctx context.Context) {
	poll := time.NewTicker(certPoll)
	defer poll.Stop()
	var w *fsnotify.Watcher
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	watched := map[string]bool{}
	var retry, settle <-chan time.Time
	// arm watches the directories of the files now served and stops
	// watching the others.
	arm := func() {
		retry = nil
		if w == nil {
			var err error
			if w, err = fsnotify.NewWatcher(); err != nil {
				l.log.Warn("cannot watch the certificate files; they are read every "+certPoll.String(), "err", err)
				w, retry = nil, time.After(certRewatch)
				return
			}
			clear(watched)
		}
		want := map[string]bool{}
		for _, d := range certs.Dirs(l.certs.Files()) {
			want[d] = true
			if watched[d] {
				continue
			}
			if err := w.Add(d); err != nil {
				l.log.Warn("cannot watch a certificate directory; trying again", "dir", d, "err", err)
				retry = time.After(certRewatch)
				continue
			}
			watched[d] = true
		}
		for d := range watched {
			if !want[d] {
				w.Remove(d)
				delete(watched, d)
			}
		}
	}
	arm()
	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if w != nil {
			events, errs = w.Events, w.Errors
		}
		select {
		case <-ctx.Done():
			return
		case <-l.certsMoved:
			arm()
		case <-retry:
			arm()
		case _, ok := <-events:
			if !ok {
				w.Close()
				w, retry = nil, time.After(certRewatch)
				continue
			}
			settle = time.After(certSettle)
		case err, ok := <-errs:
			if !ok {
				w.Close()
				w, retry = nil, time.After(certRewatch)
				continue
			}
			l.log.Debug("certificate watch", "err", err)
		case <-settle:
			settle = nil
			l.reloadCertificates("file change")
			// A symbolic link flip may point at a new directory.
			arm()
		case <-poll.C:
			l.reloadCertificates("poll")
		}
	}
}
