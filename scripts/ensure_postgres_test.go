// Package scripts holds the tests of the project's shell scripts.
package scripts

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeTools writes fake pg_isready, pg_ctlcluster, docker and apt-get into
// a directory: pg_isready answers once the file "up" exists in state,
// pg_ctlcluster creates it (when startWorks), docker info succeeds when
// dockerWorks, and every call is logged to state/calls.
func fakeTools(t *testing.T, startWorks, dockerWorks bool) (bin, state string) {
	t.Helper()
	bin, state = t.TempDir(), t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho \""+name+" $*\" >> "+state+"/calls\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("pg_isready", "test -f "+state+"/up\n")
	if startWorks {
		write("pg_ctlcluster", "touch "+state+"/up\n")
	} else {
		write("pg_ctlcluster", "exit 1\n")
	}
	if dockerWorks {
		write("docker", "case \"$1\" in exec) test -f "+state+"/up ;; start) exit 1 ;; run) touch "+state+"/up ;; esac\n")
	} else {
		write("docker", "exit 1\n")
	}
	write("apt-get", "exit 0\n")
	return bin, state
}

func runScript(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"ensure-postgres.sh"}, args...)...)
	cmd.Env = append([]string{"HOME=" + t.TempDir()}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestEnsurePostgresDecisions drives the script's choices with fake tools.
func TestEnsurePostgresDecisions(t *testing.T) {
	t.Parallel()
	etcWith := t.TempDir() // an installed cluster 15/main
	if err := os.MkdirAll(filepath.Join(etcWith, "15", "main"), 0o755); err != nil {
		t.Fatal(err)
	}
	etcEmpty := t.TempDir()
	for _, tc := range []struct {
		name              string
		mode              string
		etc               string
		up, start, docker bool
		env               []string
		wantOut           string
		wantErr           bool
		wantCall, noCall  string
	}{
		{name: "running", mode: "test", etc: etcWith, up: true,
			wantOut: "export TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'", noCall: "pg_ctlcluster"},
		{name: "stopped cluster is started", mode: "run", etc: etcWith, start: true,
			wantOut:  "export DATABASE_URL='postgres://postgres@127.0.0.1:5432/irisx_broker?sslmode=disable'",
			wantCall: "pg_ctlcluster --skip-systemctl-redirect 15 main start"},
		{name: "other port and cluster", mode: "run", etc: etcWith, start: true,
			env:      []string{"PG_PORT=5499", "PG_CLUSTER=main"},
			wantOut:  "export DATABASE_URL='postgres://postgres@127.0.0.1:5499/irisx_broker?sslmode=disable'",
			wantCall: "pg_isready -q -h 127.0.0.1 -p 5499"},
		{name: "nothing installed, docker, tests use testcontainers", mode: "test", etc: etcEmpty, docker: true,
			env: []string{"ENSURE_PG_NO_INSTALL=1"}, wantOut: "unset TEST_DATABASE_URL", noCall: "docker run"},
		{name: "nothing installed, docker, run starts a container", mode: "run", etc: etcEmpty, docker: true,
			env:      []string{"ENSURE_PG_NO_INSTALL=1"},
			wantOut:  "export DATABASE_URL='postgres://postgres@127.0.0.1:5432/irisx_broker?sslmode=disable'",
			wantCall: "docker run -d --name irisx-broker-postgres -p 127.0.0.1:5432:5432"},
		{name: "nothing at all", mode: "test", etc: etcEmpty,
			env: []string{"ENSURE_PG_NO_INSTALL=1"}, wantErr: true},
		{name: "caller's URL wins", mode: "test", etc: etcEmpty,
			env:     []string{"TEST_DATABASE_URL=postgres://u@db:5432/x"},
			wantOut: "export TEST_DATABASE_URL='postgres://u@db:5432/x'", noCall: "pg_isready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, state := fakeTools(t, tc.start, tc.docker)
			if tc.up {
				if err := os.WriteFile(filepath.Join(state, "up"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			env := append([]string{"PATH=" + bin + ":/usr/bin:/bin", "PG_ETC=" + tc.etc, "PG_WAIT=2"}, tc.env...)
			out, errOut, err := runScript(t, env, tc.mode)
			calls, _ := os.ReadFile(filepath.Join(state, "calls"))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v; stderr:\n%s", err, tc.wantErr, errOut)
			}
			if tc.wantErr {
				if out != "" || !strings.Contains(errOut, "apt-get install postgresql") {
					t.Errorf("stdout %q, stderr %q: want nothing to eval and one message naming what to install", out, errOut)
				}
				return
			}
			if strings.TrimSpace(out) != tc.wantOut {
				t.Errorf("stdout = %q, want %q (stderr %s)", out, tc.wantOut, errOut)
			}
			if tc.wantCall != "" && !strings.Contains(string(calls), tc.wantCall) {
				t.Errorf("calls:\n%s\nwant one containing %q", calls, tc.wantCall)
			}
			if tc.noCall != "" && strings.Contains(string(calls), tc.noCall) {
				t.Errorf("calls:\n%s\nwant none containing %q", calls, tc.noCall)
			}
		})
	}
}

// TestMakeRunStartsStoppedCluster is the fresh-machine check for real: on a
// second, stopped Debian cluster of its own (so the shared one is never
// touched), `make run` starts the cluster and the broker becomes ready.
func TestMakeRunStartsStoppedCluster(t *testing.T) {
	if os.Getuid() != 0 || lookPath("pg_createcluster") == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI needs root and Debian's postgresql-common (pg_createcluster) for this test")
		}
		t.Skip("needs root and pg_createcluster")
	}
	versions, _ := filepath.Glob("/etc/postgresql/*")
	if len(versions) == 0 {
		t.Fatal("no installed PostgreSQL version under /etc/postgresql")
	}
	version := filepath.Base(versions[len(versions)-1])
	port := freePort(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	cluster := "irisx_ensure_" + hex.EncodeToString(b)
	create := exec.Command(lookPath("pg_createcluster"), version, cluster, "-p", fmt.Sprint(port), "--", "--auth=trust")
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("pg_createcluster: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		out, err := exec.Command(lookPath("pg_dropcluster"), "--stop", version, cluster).CombinedOutput()
		if err != nil {
			t.Errorf("pg_dropcluster: %v\n%s", err, out)
		}
	})

	public, internal := freePort(t), freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-s", "-C", "..", "run",
		"DEV_FLAGS=-sim-addr 127.0.0.1:0 -state-dir "+t.TempDir())
	env := []string{"PG_PORT=" + fmt.Sprint(port), "PG_CLUSTER=" + cluster, "PG_VERSION=" + version,
		"PUBLIC_ADDR=127.0.0.1:" + fmt.Sprint(public), "INTERNAL_ADDR=127.0.0.1:" + fmt.Sprint(internal)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MAKELEVEL=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()

	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", public)
	for {
		resp, err := http.Get(readyz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("make run exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("not ready within the deadline\n%s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := exec.Command("pg_isready", "-q", "-h", "127.0.0.1", "-p", fmt.Sprint(port)).Run(); err != nil {
		t.Errorf("the cluster does not answer after make run: %v", err)
	}
}

func lookPath(name string) string {
	for _, dir := range []string{"", "/usr/sbin/", "/usr/bin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
