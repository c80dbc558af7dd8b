package main

import (
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

var versionLine = regexp.MustCompile(`^irisx-broker (\S+) \(revision (\S+?)(, modified)?, (go\S+)\)\n$`)

func TestVersionCommand(t *testing.T) {
	var out, errOut testkit.Buffer
	if err := run(t.Context(), []string{"irisx-broker", "version"}, mapEnv(nil), strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("version: %v (%s)", err, errOut.String())
	}
	m := versionLine.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("version printed %q", out.String())
	}
	if m[4] != runtime.Version() {
		t.Errorf("go version %q, want %q", m[4], runtime.Version())
	}
}

// The linker flags (container builds have no .git for the go command to
// read) win over the build information.
func TestVersionFromLinkerFlags(t *testing.T) {
	version, revision = "v9.8.7", "0123456789abcdef"
	t.Cleanup(func() { version, revision = "", "" })
	var out testkit.Buffer
	if err := runVersion(&out); err != nil {
		t.Fatal(err)
	}
	m := versionLine.FindStringSubmatch(out.String())
	if m == nil || m[1] != "v9.8.7" || m[2] != "0123456789abcdef" {
		t.Errorf("version = %q, want v9.8.7 and revision 0123456789abcdef", out.String())
	}
}
