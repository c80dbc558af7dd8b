package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/kms"
	"github.com/irisx-broker/irisx-broker/store"
)

func runKeys(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(keysUsage)
	}
	switch args[0] {
	case "generate":
		return runKeysGenerate(ctx, args[1:], stdout)
	case "rewrap":
		return runKeysRewrap(ctx, args[1:], lookup, stdout, stderr)
	case "reencrypt":
		return runKeysReencrypt(ctx, args[1:], lookup, stdout, stderr)
	}
	return fmt.Errorf("unknown keys command %q", args[0])
}

const keysUsage = "usage: keys generate [--id ID] [--kms URL] | keys rewrap [--from URL] --to URL | keys reencrypt [--batch N]"

// runKeysGenerate prints a new `id:base64key` entry for ENCRYPTION_KEYS;
// with --kms, the key wrapped by that KMS key, for ENCRYPTION_KEYS under
// the same KMS_KEY_URL. The default id is the date, which sorts and says
// when the key was made.
func runKeysGenerate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	id := fs.String("id", "k"+time.Now().UTC().Format("20060102150405"), "key id")
	kmsURL := fs.String("kms", "", "wrap the key with this KMS key (a KMS_KEY_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kmsURL != "" {
		entry, err := kms.Generate(ctx, *kmsURL, *id)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, entry.Reveal())
		return nil
	}
	entry, err := crypto.GenerateKey(*id)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, entry)
	return nil
}

// runKeysRewrap prints the entries of ENCRYPTION_KEYS (or
// ENCRYPTION_KEYS_FILE, read exactly as serve reads them) wrapped by the
// KMS key --to, for a KMS key rotation: the data keys stay the same, so no
// row is re-encrypted. --from is the KMS key they are wrapped with now and
// defaults to KMS_KEY_URL; with neither, the entries are plain keys being
// moved to a KMS for the first time. The output is one line, ready for
// ENCRYPTION_KEYS under KMS_KEY_URL=--to; nothing else goes to stdout.
func runKeysRewrap(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys rewrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", lookupOr(lookup, "KMS_KEY_URL", ""), "the KMS key the entries are wrapped with now (default KMS_KEY_URL; empty: plain keys)")
	to := fs.String("to", "", "the KMS key to wrap them with")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	if fs.NArg() > 0 || *to == "" {
		return errors.New("usage: keys rewrap [--from URL] --to URL (reads ENCRYPTION_KEYS or ENCRYPTION_KEYS_FILE)")
	}
	spec, err := readKeysSpec(lookup)
	if err != nil {
		return err
	}
	out, err := kms.Rewrap(ctx, *from, *to, spec)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, out.Reveal())
	fmt.Fprintln(stderr, "re-wrapped and checked; set ENCRYPTION_KEYS to the line above and KMS_KEY_URL to the --to key, then restart")
	return nil
}

// readKeysSpec reads ENCRYPTION_KEYS or ENCRYPTION_KEYS_FILE (one entry a
// line or comma-separated), as config does, without needing the rest of
// the configuration.
func readKeysSpec(lookup env) (crypto.Secret, error) {
	keys, file := lookupOr(lookup, "ENCRYPTION_KEYS", ""), lookupOr(lookup, "ENCRYPTION_KEYS_FILE", "")
	switch {
	case keys != "" && file != "":
		return "", errors.New("ENCRYPTION_KEYS: set either ENCRYPTION_KEYS or ENCRYPTION_KEYS_FILE, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", errors.New("ENCRYPTION_KEYS_FILE: cannot be read")
		}
		keys = strings.Join(splitLines(string(b)), ",")
	}
	if strings.TrimSpace(keys) == "" {
		return "", errors.New("ENCRYPTION_KEYS: required (or ENCRYPTION_KEYS_FILE): the entries to re-wrap")
	}
	return crypto.Secret(keys), nil
}

func splitLines(s string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == ',' }) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
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
	keyring, err := kms.ResolveKeyring(ctx, cfg.KMSKeyURL, cfg.WrappedKeys, cfg.Keyring)
	if err != nil {
		return err
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL.Reveal())
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer pool.Close()
	st := store.New(pool, keyring)

	primary := keyring.PrimaryID()
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
