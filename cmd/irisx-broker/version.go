package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// Set with -ldflags "-X main.version=... -X main.revision=..." where the
// build has no VCS information (a container build without .git).
var (
	version  string
	revision string
)

// buildVersion returns the module version and VCS revision: from the
// linker flags when set, else from the build information the go command
// records (debug.ReadBuildInfo).
func buildVersion() (ver, rev string, modified bool, goVersion string) {
	ver, rev = version, revision
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if ver == "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if ver == "" {
		ver = "(devel)"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev, modified, goVersion
}

// runVersion prints "irisx-broker VERSION (revision REV[, modified], GO)".
func runVersion(stdout io.Writer) error {
	ver, rev, modified, goVersion := buildVersion()
	mod := ""
	if modified {
		mod = ", modified"
	}
	_, err := fmt.Fprintf(stdout, "irisx-broker %s (revision %s%s, %s)\n", ver, rev, mod, goVersion)
	return err
}
