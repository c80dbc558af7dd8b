package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"
)

// ChildConfig starts `irisx-broker serve` (or other Args) as a child process.
type ChildConfig struct {
	// Binary is the path from BuildBroker.
	Binary string
	// Env is the child's whole environment: nothing is inherited, so the
	// caller's own variables cannot leak into a measurement. PUBLIC_ADDR and
	// INTERNAL_ADDR default to 127.0.0.1:0, the bound ports then read from
	// the "listening" log line (LOG_FORMAT must stay json). With LOG_LEVEL
	// warn or error that line is not logged, so free ports are picked
	// beforehand instead.
	Env map[string]string
	// Args are the arguments after the binary (default: serve).
	Args []string
	// LogPath receives the child's stdout and stderr. A file, not a pipe,
	// so that the child's request logging costs the parent nothing.
	LogPath string
	// StartTimeout bounds the wait for the listening line (default 60 s).
	StartTimeout time.Duration
}

// Child is a running broker process.
type Child struct {
	// PID is the child's process id, for /proc.
	PID int
	// PublicAddr and InternalAddr are the bound listener addresses.
	PublicAddr, InternalAddr string
	// Started is when the process was started.
	Started time.Time

	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// StartChild starts the child and waits until it logs its listening
// addresses. The child is killed if it does not get that far.
func StartChild(ctx context.Context, cfg ChildConfig) (*Child, error) {
	if cfg.Binary == "" || cfg.LogPath == "" {
		return nil, errors.New("harness: ChildConfig needs Binary and LogPath")
	}
	args := cfg.Args
	if len(args) == 0 {
		args = []string{"serve"}
	}
	env := map[string]string{"PUBLIC_ADDR": "127.0.0.1:0", "INTERNAL_ADDR": "127.0.0.1:0"}
	for k, v := range cfg.Env {
		env[k] = v
	}
	quiet := env["LOG_LEVEL"] == "warn" || env["LOG_LEVEL"] == "error"
	if quiet {
		for _, k := range []string{"PUBLIC_ADDR", "INTERNAL_ADDR"} {
			if env[k] != "127.0.0.1:0" {
				continue
			}
			addr, err := FreePort()
			if err != nil {
				return nil, err
			}
			env[k] = addr
		}
	}
	c, offset, err := launch(cfg.Binary, args, env, cfg.LogPath)
	if err != nil {
		return nil, err
	}

	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if quiet {
		c.PublicAddr, c.InternalAddr = env["PUBLIC_ADDR"], env["INTERNAL_ADDR"]
		err = c.waitDialable(wctx)
	} else {
		err = c.waitListening(wctx, offset)
	}
	if err != nil {
		_ = c.Kill()
		return nil, err
	}
	return c, nil
}

// StartServer starts any server binary with args (and an empty
// environment) and waits until it accepts connections on addr, which
// becomes the Child's PublicAddr and InternalAddr.
func StartServer(ctx context.Context, binary string, args []string, addr, logPath string) (*Child, error) {
	c, _, err := launch(binary, args, nil, logPath)
	if err != nil {
		return nil, err
	}
	c.PublicAddr, c.InternalAddr = addr, addr
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.waitDialable(wctx); err != nil {
		_ = c.Kill()
		return nil, err
	}
	return c, nil
}

// launch starts the process with its output appended to logPath and
// returns it with the log's size before it started.
func launch(binary string, args []string, env map[string]string, logPath string) (*Child, int64, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("harness: child log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor
	offset, _ := logFile.Seek(0, 2)

	cmd := exec.Command(binary, args...)
	cmd.Env = envList(env)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	c := &Child{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	c.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("harness: start %s: %w", binary, err)
	}
	c.PID = cmd.Process.Pid
	go func() { c.waitErr = cmd.Wait(); close(c.done) }()
	return c, offset, nil
}

// FreePort returns a loopback address with a port free a moment ago. Another
// process could take it before the child binds it; the child then fails to
// start, loudly.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("harness: free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitDialable waits until both listeners accept connections.
func (c *Child) waitDialable(ctx context.Context) error {
	for _, addr := range []string{c.PublicAddr, c.InternalAddr} {
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.done:
				return fmt.Errorf("harness: broker exited before listening (%v); log:\n%s", c.waitErr, c.LogTail(20))
			case <-ctx.Done():
				return fmt.Errorf("harness: broker not listening on %s: %w; log:\n%s", addr, ctx.Err(), c.LogTail(20))
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// waitListening polls the log (from offset) for serve's "listening" line.
func (c *Child) waitListening(ctx context.Context, offset int64) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if pub, internal, ok := c.findListening(offset); ok {
			c.PublicAddr, c.InternalAddr = pub, internal
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("harness: broker exited before listening (%v); log:\n%s", c.waitErr, c.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("harness: broker did not log its addresses: %w; log:\n%s", ctx.Err(), c.LogTail(20))
		case <-tick.C:
		}
	}
}

func (c *Child) findListening(offset int64) (public, internal string, ok bool) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "", "", false
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return "", "", false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg      string `json:"msg"`
			Public   string `json:"public_addr"`
			Internal string `json:"internal_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" && line.Public != "" {
			return line.Public, line.Internal, true
		}
	}
	return "", "", false
}

// PublicURL is the base URL of the public listener.
func (c *Child) PublicURL() string { return "http://" + c.PublicAddr }

// InternalURL is the base URL of the internal listener.
func (c *Child) InternalURL() string { return "http://" + c.InternalAddr }

// WaitReady polls /readyz until it answers 200 and returns the time since
// the process was started.
func (c *Child) WaitReady(ctx context.Context) (time.Duration, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.PublicURL()+"/readyz", nil)
		if err != nil {
			return 0, err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(c.Started), nil
			}
		}
		select {
		case <-c.done:
			return 0, fmt.Errorf("harness: broker exited before ready (%v); log:\n%s", c.waitErr, c.LogTail(20))
		case <-ctx.Done():
			return 0, fmt.Errorf("harness: broker not ready: %w; log:\n%s", ctx.Err(), c.LogTail(20))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Stop sends SIGTERM and waits for a graceful exit, killing the process if
// it takes longer than timeout. It returns the process's exit error.
func (c *Child) Stop(timeout time.Duration) error {
	select {
	case <-c.done:
		return c.waitErr
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.waitErr
	case <-time.After(timeout):
		_ = c.Kill()
		return fmt.Errorf("harness: broker did not stop within %v of SIGTERM; killed", timeout)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Child) Kill() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-c.done
	return nil
}

// RSS is the child's resident set size in bytes.
func (c *Child) RSS() (int64, error) { return RSS(c.PID) }

// OpenFiles is the number of the child's open file descriptors.
func (c *Child) OpenFiles() (int, error) { return OpenFiles(c.PID) }

// LogTail returns the last n lines of the child's log.
func (c *Child) LogTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
