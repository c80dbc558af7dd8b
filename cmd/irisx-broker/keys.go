package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

func runKeys(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: keys generate [--id ID] | keys reencrypt [--batch N]")
	}
	switch args[0] {
	case "generate":
		return runKeysGenerate(args[1:], stdout)
	case "reencrypt":
		return runKeysReencrypt(ctx, args[1:], lookup, stdout, stderr)
	}
	return fmt.Errorf("unknown keys command %q", args[0])
}

// runKeysGenerate prints a new `id:base64key` entry for ENCRYPTION_KEYS. The
// default id is the date, which sorts and says when the key was made.
func runKeysGenerate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	id := fs.String("id", "k"+time.Now().UTC().Format("20060102150405"), "key id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	entry, err := crypto.GenerateKey(*id)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, entry)
	return nil
}

func runKeysReencrypt(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	return errors.New("keys reencrypt is not available in this build")
}
