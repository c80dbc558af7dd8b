// Package logwriter buffers a process's log lines so that a busy server
// writes them in a few large writes instead of one write(2) per line.
//
// A line is held for at most FlushDelay (or until FlushBytes are
// waiting), and Flush and Close write out everything held: serve closes
// the writer when it stops, so a graceful stop loses no line. Only a
// process killed outright (SIGKILL, a crash) can lose what the last
// FlushDelay held; lines at warning level or above are written out at once
// (Handler), so the lines that explain a crash are not among them.
package logwriter

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

const (
	// FlushDelay is the longest a line waits in the buffer.
	FlushDelay = 20 * time.Millisecond
	// FlushBytes is how much may wait before a write flushes at once.
	FlushBytes = 32 << 10
)

// Writer is an io.Writer that buffers what it is given for w. It is safe
// for concurrent use; each Write's bytes stay together.
type Writer struct {
	w io.Writer

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer // armed while buf holds bytes
	closed bool
	err    error // the last write error, reported by the next Flush
}

// New returns a Writer for w.
func New(w io.Writer) *Writer {
	lw := &Writer{w: w, buf: make([]byte, 0, FlushBytes)}
	lw.timer = time.AfterFunc(time.Hour, func() { _ = lw.Flush() })
	lw.timer.Stop()
	return lw
}

// Write buffers p; after Close it writes p through.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return lw.w.Write(p)
	}
	if len(lw.buf) == 0 {
		lw.timer.Reset(FlushDelay)
	}
	lw.buf = append(lw.buf, p...)
	if len(lw.buf) >= FlushBytes {
		lw.flushLocked()
	}
	return len(p), nil
}

// Flush writes out what is buffered and reports the first write error
// since the last Flush.
func (lw *Writer) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.flushLocked()
	err := lw.err
	lw.err = nil
	return err
}

func (lw *Writer) flushLocked() {
	lw.timer.Stop()
	if len(lw.buf) == 0 {
		return
	}
	if _, err := lw.w.Write(lw.buf); err != nil && lw.err == nil {
		lw.err = err
	}
	if cap(lw.buf) > 4*FlushBytes {
		lw.buf = make([]byte, 0, FlushBytes) // one huge line does not stay allocated
	} else {
		lw.buf = lw.buf[:0]
	}
}

// Close flushes and makes later writes go straight through, so a line
// logged after the service stopped is never held.
func (lw *Writer) Close() error {
	err := lw.Flush()
	lw.mu.Lock()
	lw.closed = true
	lw.mu.Unlock()
	return err
}

// Handler wraps h, whose output goes to lw, so that a record at warning
// level or above is written out as soon as h has formatted it.
func Handler(h slog.Handler, lw *Writer) slog.Handler { return &flushing{Handler: h, lw: lw} }

type flushing struct {
	slog.Handler
	lw *Writer
}

func (f *flushing) Handle(ctx context.Context, r slog.Record) error {
	err := f.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		if ferr := f.lw.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (f *flushing) WithAttrs(as []slog.Attr) slog.Handler {
	return &flushing{Handler: f.Handler.WithAttrs(as), lw: f.lw}
}

func (f *flushing) WithGroup(name string) slog.Handler {
	return &flushing{Handler: f.Handler.WithGroup(name), lw: f.lw}
}
