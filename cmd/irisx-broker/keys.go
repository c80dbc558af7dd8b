package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
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

// runKeysReencrypt moves every stored secret to the primary key (the first
// of ENCRYPTION_KEYS), batch by batch, while the service may keep running.
// It needs only DATABASE_URL and the keys. Progress goes to stderr, the
// counts per old key id to stdout. Ctrl-C stops it after the current batch;
// running it again continues. It fails when any secret is left under
// another key (it could not be decrypted, or it was written meanwhile by a
// replica on an older keyring), because removing that key would lose it.
func runKeysReencrypt(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys reencrypt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	batch := fs.Int("batch", store.DefaultReencryptBatch, "rows per batch (each batch is one transaction)")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	if fs.NArg() > 0 {
		return errors.New("usage: keys reencrypt [--batch N]")
	}
	if *batch < 1 || *batch > store.MaxReencryptBatch {
		return fmt.Errorf("--batch must be between 1 and %d", store.MaxReencryptBatch)
	}
	cfg, err := config.LoadStorage(ctx, lookup, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errReported
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL.Reveal())
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer pool.Close()
	st := store.New(pool, cfg.Keyring)

	primary := cfg.Keyring.PrimaryID()
	fmt.Fprintf(stderr, "re-encrypting stored secrets under %s, %d rows a batch (Ctrl-C stops after the current batch)\n", primary, *batch)
	res, runErr := st.Reencrypt(ctx, *batch, func(p store.Progress) {
		fmt.Fprintf(stderr, "%s: batch %d, %d rows: %s\n", p.Table, p.Batches, p.Rows, formatCounts(p.Total))
	})
	printReencryptResult(stdout, res)
	switch {
	case runErr != nil && ctx.Err() != nil:
		fmt.Fprintln(stdout, "stopped before the end; run `irisx-broker keys reencrypt` again to continue")
		return errReported
	case runErr != nil:
		return runErr
	}
	var left []string
	for _, id := range slices.Sorted(maps.Keys(res.Remaining)) {
		left = append(left, fmt.Sprintf("%s (%d)", id, res.Remaining[id]))
	}
	if len(left) > 0 {
		fmt.Fprintf(stdout, "not done: secrets remain under %s; keep those keys in ENCRYPTION_KEYS\n", strings.Join(left, ", "))
		if total := res.Total(); total.Failed > 0 {
			return fmt.Errorf("%d secrets could not be decrypted", total.Failed)
		}
		return errors.New("secrets were written under an old key meanwhile (is a replica running with another primary key?); run again")
	}
	fmt.Fprintf(stdout, "done: every stored secret is under %s; keys other than %s may now be removed from ENCRYPTION_KEYS\n", primary, primary)
	return nil
}

// printReencryptResult prints one line per old key id, then the failures
// (row and column, never a value).
func printReencryptResult(w io.Writer, res store.Result) {
	for _, id := range slices.Sorted(maps.Keys(res.ByKey)) {
		fmt.Fprintf(w, "%s: %s\n", id, formatCounts(res.ByKey[id]))
	}
	for _, f := range res.Failures {
		fmt.Fprintf(w, "failed: %s %s %s under %s: %s\n", f.Table, f.Row, f.Column, f.KeyID, f.Reason)
	}
	total := res.Total()
	if unlisted := total.Failed - int64(len(res.Failures)); unlisted > 0 {
		fmt.Fprintf(w, "failed: %d more not listed\n", unlisted)
	}
	fmt.Fprintf(w, "total: %s in %d batches\n", formatCounts(total), res.Batches)
}

func formatCounts(c store.KeyCounts) string {
	return fmt.Sprintf("%d moved, %d skipped (changed meanwhile), %d failed", c.Moved, c.Skipped, c.Failed)
}
