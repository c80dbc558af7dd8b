package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// The PgBouncer suite: the store's writes that matter, through Debian's
// real pgbouncer in pool_mode=transaction, with more pool connections than
// the bouncer has server connections, so statements of one client land on
// different server connections.

// bouncedEnv is a fresh database reached through its own PgBouncer.
func bouncedEnv(t *testing.T) (*env, *testdb.PgBouncer) {
	t.Helper()
	direct := testdb.NewDatabase(t)
	b := testdb.StartPgBouncer(t)
	url := b.URL(direct)
	pool, err := store.Open(context.Background(), url+"&pool_max_conns=16")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := &env{url: url, pool: pool, keys: testkit.Keyring(t, "k1:"+testkit.Key(1)), clock: nil}
	e.store = store.New(pool, e.keys)
	return e, b
}

// parallel runs fn(i) for i in [0, n) on 16 goroutines and returns the
// errors.
func parallel(n int, fn func(i int) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

func pgbAccount(i int) string { return fmt.Sprintf("6f1c0e9a-1b2c-4d3e-8f40-%012d", 1000+i) }

// Install callbacks, credential reads and token results through the
// bouncer: every one succeeds (pgx's default statement cache gave 42P05
// "prepared statement already exists" on 42 of 100 installs).
func TestPgBouncerInstallsAndTokens(t *testing.T) {
	t.Parallel()
	e, b := bouncedEnv(t)
	const n = 100
	now := time.Now().UTC().Truncate(time.Second)
	errs := parallel(n, func(i int) error {
		ev := installed(pgbAccount(i), fmt.Sprintf("cid-%d", i), fmt.Sprintf("secret-%d", i), now)
		ev.JTI = fmt.Sprintf("jti-%d", i)
		if out, err := e.store.ApplyInstallEvent(testkit.Context(t), ev); err != nil || out != store.OutcomeInstalled {
			return fmt.Errorf("install %d: %q, %w", i, out, err)
		}
		for range 4 { // GetToken reads the credentials, then records the result
			c, err := e.store.InstallCredentials(testkit.Context(t), app, pgbAccount(i))
			if err != nil {
				return fmt.Errorf("credentials %d: %w", i, err)
			}
			if c.ClientSecret.Reveal() != fmt.Sprintf("secret-%d", i) {
				return fmt.Errorf("credentials %d: wrong secret", i)
			}
			if err := e.store.RecordTokenResults(testkit.Context(t), []store.TokenResult{{IrisAppID: app, AccountID: pgbAccount(i), At: time.Now()}}); err != nil {
				return fmt.Errorf("token result %d: %w", i, err)
			}
		}
		return nil
	})
	if len(errs) > 0 {
		t.Fatalf("%d of %d installs failed through PgBouncer, first: %v\n%s", len(errs), n, errs[0], b.Log())
	}
	if got := e.count(t, "SELECT count(*) FROM installs WHERE status = $1", store.StatusInstalled); got != n {
		t.Errorf("%d installed rows, want %d", got, n)
	}
	if got := e.count(t, "SELECT count(*) FROM installs WHERE last_token_at IS NOT NULL"); got != n {
		t.Errorf("%d rows with a token result, want %d", got, n)
	}
	// Uninstalls and rejections go through the same path.
	errs = parallel(n, func(i int) error {
		if i%2 == 0 {
			_, err := e.store.ApplyInstallEvent(testkit.Context(t), uninstalled(pgbAccount(i), now.Add(time.Second)))
			return err
		}
		c, err := e.store.InstallCredentials(testkit.Context(t), app, pgbAccount(i))
		if err != nil {
			return err
		}
		return e.store.MarkCredentialsRejected(testkit.Context(t), app, pgbAccount(i), c.Version, "invalid_client")
	})
	if len(errs) > 0 {
		t.Fatalf("%d uninstalls/rejections failed, first: %v", len(errs), errs[0])
	}
	if got := e.count(t, "SELECT count(*) FROM installs WHERE status = $1", store.StatusInstalled); got != 0 {
		t.Errorf("%d rows still installed, want 0", got)
	}
}

// The control: the same bouncer breaks pgx's default statement cache, so
// the test above passes because of PoolConfig's exec mode, not because
// the bouncer is lenient.
func TestPgBouncerBreaksStatementCache(t *testing.T) {
	t.Parallel()
	direct := testdb.NewDatabase(t)
	b := testdb.StartPgBouncer(t)
	pool, err := store.Open(context.Background(), b.URL(direct)+"&pool_max_conns=16&default_query_exec_mode=cache_statement")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := store.New(pool, testkit.Keyring(t, "k1:"+testkit.Key(1)))
	errs := parallel(200, func(i int) error {
		_, err := st.InstallCredentials(testkit.Context(t), app, pgbAccount(i))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	var pgErr *pgconn.PgError
	broken := 0
	for _, err := range errs {
		if errors.As(err, &pgErr) && (pgErr.Code == "42P05" || pgErr.Code == "26000") ||
			strings.Contains(err.Error(), "prepared statement") {
			broken++
		}
	}
	if broken == 0 {
		t.Fatalf("no prepared-statement error through a transaction-mode PgBouncer with the statement cache (errors: %v): is it pooling by transaction?", errs)
	}
	t.Logf("statement cache through PgBouncer: %d of 200 reads failed (as expected)", broken)
}

// API-user token writes (the row-locked refresh) through the bouncer.
func TestPgBouncerAPIUserTokens(t *testing.T) {
	t.Parallel()
	e, _ := bouncedEnv(t)
	for i := range 4 {
		e.createUser(t, newUser(fmt.Sprintf("user%d", i)))
	}
	const n = 80
	errs := parallel(n, func(i int) error {
		name := fmt.Sprintf("user%d", i%4)
		tok := store.APIUserTokens{AccessToken: crypto.Secret(fmt.Sprintf("at-%d", i)),
			RefreshToken: crypto.Secret(fmt.Sprintf("rt-%d", i)), TokenType: "Bearer",
			Scopes: []string{"api"}, ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
		_, err := e.store.UpdateAPIUserLocked(testkit.Context(t), name, func(st store.APIUserState) (store.APIUserUpdate, error) {
			return store.APIUserUpdate{Tokens: &tok}, nil
		})
		if err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
		got, err := e.store.APIUserToken(testkit.Context(t), name)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if got.AccessToken.Reveal() == "" {
			return fmt.Errorf("read %s: no access token", name)
		}
		return nil
	})
	if len(errs) > 0 {
		t.Fatalf("%d of %d API-user token writes failed through PgBouncer, first: %v", len(errs), n, errs[0])
	}
	users, err := e.store.ListAPIUsers(testkit.Context(t))
	if err != nil || len(users) != 4 {
		t.Fatalf("ListAPIUsers = %d users, %v; want 4", len(users), err)
	}
}

// Three replicas start at once on an empty database, migrating through
// the bouncer: one migrates, the others find it done; nothing dirty.
func TestPgBouncerThreeSimultaneousMigrations(t *testing.T) {
	t.Parallel()
	direct := emptyDatabase(t)
	b := testdb.StartPgBouncer(t)
	threeStarts(t, b.URL(direct), direct)
}
