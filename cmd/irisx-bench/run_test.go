package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Flag errors stop the command before it touches the machine; the run
// itself is tested in package bench.
func TestRunRefusesBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"irisx-bench", "-profile", "sometimes"}, "-profile must be missed, all or off"},
		{[]string{"irisx-bench", "-list-installs", "-5"}, "-list-installs must not be negative"},
		{[]string{"irisx-bench", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"irisx-bench", "-h"}, "usage: irisx-bench"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), tc.args, &stdout, &stderr); err == nil {
			t.Errorf("%v: no error", tc.args)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("%v: printed %q", tc.args, stdout.String())
		}
	}
}
