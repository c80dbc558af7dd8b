package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the directory of the module's go.mod, asking the go
// command from the current directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("harness: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("harness: not inside the irisx-broker module")
	}
	return filepath.Dir(gomod), nil
}

// BuildBroker builds cmd/irisx-broker into dir and returns the binary's
// path. The go command's build cache makes repeated builds cheap.
func BuildBroker(ctx context.Context, dir string) (string, error) {
	return Build(ctx, dir, "./cmd/irisx-broker")
}

// Build builds the module's main package pkg ("./cmd/...") into dir and
// returns the binary's path.
func Build(ctx context.Context, dir, pkg string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}
