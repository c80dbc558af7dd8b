package token

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const userKeys = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// userEnv is one database shared by any number of broker replicas, each
// with its own pool, store and memory, and the Trackunit simulator; all of
// them read one fake clock.
type userEnv struct {
	t      *testing.T
	dbURL  string
	keys   *crypto.Keyring
	clock  *testkit.Clock
	sim    *trackunitsim.Sim
	simURL string
	logs   *testkit.Buffer
	sleeps *sleepRec
	pool   *pgxpool.Pool // for registering users and inspecting rows
	admin  *store.Store
	// handedOut collects every access token returned, for the leak scans.
	mu        sync.Mutex
	handedOut []string
}

func newUserEnv(t *testing.T, simOpts trackunitsim.Options) *userEnv {
	t.Helper()
	e := &userEnv{t: t, clock: testkit.NewClock(epoch), logs: &testkit.Buffer{}, sleeps: &sleepRec{}}
	simOpts.Now = e.clock.Now
	sim, err := trackunitsim.New(simOpts)
	if err != nil {
		t.Fatal(err)
	}
	e.sim = sim
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	e.simURL = srv.URL
	if e.keys, err = crypto.ParseKeyring(userKeys); err != nil {
		t.Fatal(err)
	}
	e.dbURL = testdb.NewDatabase(t)
	e.pool, e.admin = e.newStore()
	return e
}

func (e *userEnv) newStore() (*pgxpool.Pool, *store.Store) {
	e.t.Helper()
	pool, err := store.Open(context.Background(), e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return pool, store.New(pool, e.keys, store.WithClock(e.clock.Now))
}

// replica starts a broker as a new process would: its own pool and an
// empty memory. transport, if set, sits between it and the simulator.
func (e *userEnv) replica(mod func(*Config)) *APIUserTokens {
	e.t.Helper()
	_, st := e.newStore()
	cfg := Config{
		AuthURL:       e.simURL,
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
		Now:           e.clock.Now,
		Sleep:         e.sleeps.Sleep,
		FetchTimeout:  20 * time.Second,
		RefreshMargin: 5 * time.Minute,
		Logger:        slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := NewAPIUsers(cfg, st)
	if err != nil {
		e.t.Fatal(err)
	}
	b.b.rand = func() float64 { return 0.5 }
	e.t.Cleanup(b.b.bg.Wait)
	return b
}

// testUser is an API user known to both the simulator and the broker.
type testUser struct {
	name, username string
	password       crypto.Secret
	clientID       string
	clientSecret   crypto.Secret
}

func (u testUser) secrets() []string {
	return []string{u.password.Reveal(), u.clientID, u.clientSecret.Reveal()}
}

// register adds the user to the simulator and registers it with the broker.
func (e *userEnv) register(name string) testUser {
	e.t.Helper()
	clientID, secret := trackunitsim.NewClientCredentials()
	_, pw := trackunitsim.NewClientCredentials()
	u := testUser{name: name, username: name + "@api.example", password: "pw-" + pw, clientID: clientID, clientSecret: secret}
	e.sim.AddUser(u.username, u.password, u.clientID, u.clientSecret)
	e.save(u)
	return u
}

// save (re)registers u with the broker, as CreateApiUser does.
func (e *userEnv) save(u testUser) {
	e.t.Helper()
	_, err := e.admin.CreateAPIUser(testkit.Context(e.t), store.NewAPIUser{Name: u.name, Username: u.username,
		Password: u.password, ClientID: crypto.Secret(u.clientID), ClientSecret: u.clientSecret})
	if err != nil {
		e.t.Fatal(err)
	}
}

// token gets a token that must succeed and be valid at Trackunit.
func (e *userEnv) token(b *APIUserTokens, name string) string {
	e.t.Helper()
	tok, err := b.Token(testkit.Context(e.t), name, 0)
	if err != nil {
		e.t.Fatalf("Token(%s): %v", name, err)
	}
	e.noteToken(tok.AccessToken.Reveal())
	if !e.sim.ValidAccessToken(tok.AccessToken.Reveal()) {
		e.t.Fatalf("Token(%s) returned a token Trackunit does not know or has expired", name)
	}
	return tok.AccessToken.Reveal()
}

func (e *userEnv) noteToken(tok string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handedOut = append(e.handedOut, tok)
}

func (e *userEnv) calls(u testUser) (password, refresh int) {
	return e.sim.UserCalls(u.username, trackunitsim.GrantPassword), e.sim.UserCalls(u.username, trackunitsim.GrantRefreshToken)
}

// listed is the user as ListApiUsers shows it.
func (e *userEnv) listed(name string) store.APIUser {
	e.t.Helper()
	users, err := e.admin.ListAPIUsers(testkit.Context(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range users {
		if u.Name == name {
			return u
		}
	}
	e.t.Fatalf("API user %s not listed", name)
	return store.APIUser{}
}

// refreshToken is the stored refresh token, read under the row lock.
func (e *userEnv) refreshToken(name string) string {
	e.t.Helper()
	var rt string
	_, err := e.admin.UpdateAPIUserLocked(testkit.Context(e.t), name, func(st store.APIUserState) (store.APIUserUpdate, error) {
		rt = st.RefreshToken.Reveal()
		return store.APIUserUpdate{}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return rt
}

// dump is every row of every table as text.
func (e *userEnv) dump() string {
	e.t.Helper()
	ctx := testkit.Context(e.t)
	rows, err := e.pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		e.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var sb strings.Builder
	for _, table := range tables {
		rows, err := e.pool.Query(ctx, "SELECT t::text FROM "+table+" t")
		if err != nil {
			e.t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				e.t.Fatal(err)
			}
			sb.WriteString(table + ": " + line + "\n")
		}
		rows.Close()
	}
	return sb.String()
}

// assertNoLeak fails if any secret appears in text as is or hex-encoded
// (how bytea prints).
func assertNoLeak(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(text, s) || strings.Contains(text, hex.EncodeToString([]byte(s))) {
			t.Errorf("%s contains a secret (%d bytes long)", where, len(s))
		}
	}
}
