package logwriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// syncBuffer is a bytes.Buffer safe to read while the writer's timer
// writes to it, counting the writes it gets.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	err    error
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.err != nil {
		return 0, s.err
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func TestLinesAreHeldThenWrittenTogether(t *testing.T) {
	var out syncBuffer
	lw := New(&out)
	for i := range 100 {
		fmt.Fprintf(lw, "line %d\n", i)
	}
	// (A slow machine may let the timer fire once or twice meanwhile.)
	if got := out.Writes(); got > 3 {
		t.Fatalf("100 short lines took %d writes; want them held", got)
	}
	// Without a Flush they are written out within FlushDelay.
	testkit.WaitFor(t, "100 lines written out", func() bool { return strings.Count(out.String(), "\n") == 100 })
	if got := out.Writes(); got > 3 {
		t.Errorf("100 lines written in %d writes, want them written together", got)
	}
	if !strings.HasPrefix(out.String(), "line 0\nline 1\n") || !strings.HasSuffix(out.String(), "line 99\n") {
		t.Errorf("lines out of order: %q...", out.String()[:20])
	}
}

func TestFullBufferIsWrittenAtOnce(t *testing.T) {
	var out syncBuffer
	lw := New(&out)
	line := strings.Repeat("x", 1023) + "\n"
	for range FlushBytes / len(line) {
		_, _ = lw.Write([]byte(line))
	}
	if got := len(out.String()); got != FlushBytes {
		t.Fatalf("after %d bytes, %d written; want all of them at once", FlushBytes, got)
	}
}

func TestCloseWritesEverythingAndThenWritesThrough(t *testing.T) {
	var out syncBuffer
	lw := New(&out)
	_, _ = lw.Write([]byte("before close\n"))
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "before close\n" {
		t.Fatalf("after Close: %q", out.String())
	}
	_, _ = lw.Write([]byte("after close\n"))
	if out.String() != "before close\nafter close\n" {
		t.Fatalf("a write after Close was held: %q", out.String())
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	var out syncBuffer
	lw := New(&out)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(lw, "%s %d\n", strings.Repeat(string(rune('a'+w)), 40), i)
			}
		})
	}
	wg.Wait()
	_ = lw.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		if len(l) < 42 || strings.Count(l, l[:1]) < 40 {
			t.Fatalf("interleaved line %q", l)
		}
	}
}

func TestWriteErrorIsReportedByFlush(t *testing.T) {
	out := &syncBuffer{err: errors.New("disk full")}
	lw := New(out)
	_, _ = lw.Write([]byte("lost\n"))
	if err := lw.Flush(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Flush: %v, want the write error", err)
	}
	if err := lw.Flush(); err != nil {
		t.Fatalf("second Flush: %v, want the error reported once", err)
	}
}

// A warning is written out as soon as it is logged, with what was held
// before it; an info line waits.
func TestHandlerFlushesWarnings(t *testing.T) {
	var out syncBuffer
	lw := New(&out)
	log := slog.New(Handler(slog.NewJSONHandler(lw, nil), lw)).With("service", "test")
	log.Info("request")
	if out.String() != "" {
		t.Fatalf("info line written at once: %q", out.String())
	}
	log.LogAttrs(context.Background(), slog.LevelWarn, "database unavailable")
	got := out.String()
	if !strings.Contains(got, `"msg":"request"`) || !strings.Contains(got, `"msg":"database unavailable"`) ||
		!strings.Contains(got, `"service":"test"`) {
		t.Fatalf("after a warning: %q; want both lines, with the logger's attributes", got)
	}
}
