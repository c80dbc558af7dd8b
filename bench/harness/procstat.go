package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RSS reads a process's resident set size (VmRSS) from /proc, in bytes.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("harness: rss: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("harness: rss: %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("harness: rss: no VmRSS for pid %d", pid)
}

// OpenFiles counts a process's open file descriptors in /proc/PID/fd.
func OpenFiles(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("harness: open files: %w", err)
	}
	return len(entries), nil
}

// PeakRSS samples a process's RSS every interval until ctx ends and reports
// the highest value seen.
type PeakRSS struct {
	mu   sync.Mutex
	peak int64
	err  error
	done chan struct{}
}

// SamplePeakRSS starts sampling pid's RSS; read the result with Wait after
// ctx ends.
func SamplePeakRSS(ctx context.Context, pid int, interval time.Duration) *PeakRSS {
	p := &PeakRSS{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			rss, err := RSS(pid)
			p.mu.Lock()
			if err != nil && p.err == nil {
				p.err = err
			}
			p.peak = max(p.peak, rss)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Wait returns the peak once sampling has stopped.
func (p *PeakRSS) Wait() (int64, error) {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak, p.err
}

// Machine describes the host a benchmark ran on.
type Machine struct {
	CPUs      int
	CPUModel  string
	MemTotal  string // as /proc/meminfo says, e.g. "24684472 kB"
	Kernel    string
	GoVersion string
}

// DescribeMachine reads the CPU count and model, memory and kernel from /proc.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	m.MemTotal = procField("/proc/meminfo", "MemTotal")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// MemTotalGiB is MemTotal in GiB, 0 when unknown.
func (m Machine) MemTotalGiB() float64 {
	kb, err := strconv.ParseFloat(strings.TrimSuffix(m.MemTotal, " kB"), 64)
	if err != nil {
		return 0
	}
	return kb / (1 << 20)
}

// LoadAverage returns the 1, 5 and 15 minute load averages.
func LoadAverage() (one, five, fifteen float64, err error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("harness: loadavg: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("harness: loadavg: %q", b)
	}
	vals := make([]float64, 3)
	for i := range vals {
		if vals[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return 0, 0, 0, fmt.Errorf("harness: loadavg: %w", err)
		}
	}
	return vals[0], vals[1], vals[2], nil
}

// procField returns the value of the first "name : value" line of a /proc
// file, "" when absent.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// CPUTime is a process's user plus system CPU time so far, all threads,
// from /proc/PID/stat (fields 14 and 15, in USER_HZ ticks, which Linux fixes
// at 100 per second for this interface: 10 ms resolution, so measure
// windows of seconds).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("harness: cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("harness: cpu time: unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("harness: cpu time: short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("harness: cpu time: /proc/%d/stat: %v %v", pid, err1, err2)
	}
	const tick = 10 * time.Millisecond
	return time.Duration(utime+stime) * tick, nil
}
