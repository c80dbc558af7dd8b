package trackunitsim

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Endpoint names accepted by InjectFault, Calls and the control API.
const (
	EndpointAppToken = "apptoken"
	EndpointToken    = "token"
	EndpointTokenV2  = "token_v2"
	EndpointJWKS     = "jwks"
)

// DefaultTokenTTL is the expires_in of /apptoken and /token, as Trackunit
// documents it.
const DefaultTokenTTL = 3600 * time.Second

// Options configures a Sim. The zero value is usable.
type Options struct {
	// Now is the clock for token lifetimes, identity claims and the refresh
	// grace window (default time.Now).
	Now func() time.Time
	// Sleep waits for an injected fault's latency; it must return early
	// with ctx's error when ctx ends. The default uses a real timer; tests
	// may record the requested duration instead of waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// TokenTTL is expires_in for /apptoken and /token (default 3600 s).
	TokenTTL time.Duration
	// AllowedScopes are the scopes /apptoken accepts for a client registered
	// without its own list (default AppScopes()). /token accepts only "api"
	// and "offline_access".
	AllowedScopes []string
	// RefreshGrace is how long a just-rotated refresh token still works
	// (default 0: strict, a spent token is refused at once and its chain
	// revoked).
	RefreshGrace time.Duration
	// Issuer and Audience go into signed identity JWTs as iss and aud when
	// non-empty.
	Issuer, Audience string
	// HTTPClient sends install callbacks (default: a client with a 10 s
	// time-out).
	HTTPClient *http.Client
	// SkippedKeys publishes, besides the signing key, one key of each of
	// these SkippedKeyKinds, which a verifier must skip.
	SkippedKeys []string
	// RecordRequests keeps the first MaxRecordedRequests client-credentials
	// requests of /apptoken and /token/v2 for Requests, a test's view of
	// what a broker sent and got.
	RecordRequests bool
}

// Sim is the simulated Trackunit. Create it with New or LoadSim.
type Sim struct {
	opts Options

	// closed ends hanging and delayed fault handlers when the Sim closes, so
	// that a server's graceful shutdown is not held up by them.
	closed context.Context
	close  context.CancelFunc

	mu         sync.Mutex
	keys       []*simKey // in publication order
	signingKID string
	clients    map[string]*appClient    // /apptoken clients by client id
	apiKeys    map[string]*appClient    // /token/v2 API keys by client id
	installs   map[installKey]string    // current client id per install
	users      map[string]*apiUser      // /token users by username
	apiClients map[string]crypto.Secret // /token client id -> secret
	refresh    map[string]*refreshToken
	access     map[string]accessToken
	sweepAt    int // len(access) at which issueAccessLocked next drops expired tokens
	faults     map[string][]*Fault
	holds      map[string]chan struct{}
	requests   map[string][]TokenRequest // with Options.RecordRequests
	calls      map[string]int
	clientCall map[string]int
	userCall   map[string]map[string]int
	reuse      int
	iris       irisState
}

// New returns a Sim with one fresh RS256 signing key.
func New(opts Options) (*Sim, error) {
	s := newSim(opts)
	if _, err := s.Rotate("RS256"); err != nil {
		return nil, err
	}
	for _, kind := range opts.SkippedKeys {
		if _, err := s.AddSkippedKey(kind); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func newSim(opts Options) *Sim {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.AllowedScopes == nil {
		opts.AllowedScopes = AppScopes()
	} else {
		opts.AllowedScopes = slices.Clone(opts.AllowedScopes)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sim{
		opts:       opts,
		closed:     ctx,
		close:      cancel,
		clients:    map[string]*appClient{},
		apiKeys:    map[string]*appClient{},
		installs:   map[installKey]string{},
		users:      map[string]*apiUser{},
		apiClients: map[string]crypto.Secret{},
		refresh:    map[string]*refreshToken{},
		access:     map[string]accessToken{},
		faults:     map[string][]*Fault{},
		holds:      map[string]chan struct{}{},
		requests:   map[string][]TokenRequest{},
		calls:      map[string]int{},
		clientCall: map[string]int{},
		userCall:   map[string]map[string]int{},
	}
}

// Close releases every request held by a Hang or Latency fault. The Sim keeps
// answering afterwards, but new hangs and latencies end at once.
func (s *Sim) Close() {
	s.close()
}

// Handler returns the simulator's HTTP routes: the JWKS, /apptoken, /token
// and the /sim control API. The control API has no authentication and makes
// the simulator POST to any URL it is given: serve it on loopback only.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/marketplace/jwks", s.handleJWKS)
	mux.HandleFunc("GET /jwks", s.handleJWKS)
	mux.HandleFunc("POST /apptoken", s.held(EndpointAppToken, s.handleAppToken))
	mux.HandleFunc("POST /token", s.held(EndpointToken, s.handleToken))
	mux.HandleFunc("POST /token/v2", s.held(EndpointTokenV2, s.handleTokenV2))
	mux.HandleFunc("POST /sim/send", s.handleSend)
	mux.HandleFunc("POST /sim/rotate", s.handleRotate)
	mux.HandleFunc("POST /sim/revoke", s.handleRevoke)
	mux.HandleFunc("POST /sim/users", s.handleAddUser)
	mux.HandleFunc("POST /sim/faults", s.handleInjectFault)
	mux.HandleFunc("DELETE /sim/faults", s.handleClearFaults)
	mux.HandleFunc("GET /sim/stats", s.handleStats)
	s.routeIRIS(mux)
	return mux
}

// Calls reports how many requests an endpoint ("apptoken", "token", "jwks")
// has received, faulted ones included.
func (s *Sim) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// ClientCalls reports how many /apptoken requests named clientID, whatever
// their outcome.
func (s *Sim) ClientCalls(clientID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientCall[clientID]
}

// UserCalls reports how many /token requests with the given grant
// ("password" or "refresh_token") concerned username, whatever their outcome.
// A refresh_token request counts for the user who owns the token.
func (s *Sim) UserCalls(username, grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userCall[username][grant]
}

// SpentRefreshReuse reports how many times a spent refresh token was presented
// after its grace window (each one revoked its chain).
func (s *Sim) SpentRefreshReuse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reuse
}

// Stats is a snapshot of the counters and keys, as GET /sim/stats shows it.
type Stats struct {
	Calls             map[string]int            `json:"calls"`
	ClientCalls       map[string]int            `json:"clientCalls"`
	UserCalls         map[string]map[string]int `json:"userCalls"`
	SpentRefreshReuse int                       `json:"spentRefreshReuse"`
	SigningKID        string                    `json:"signingKid"`
	KIDs              []string                  `json:"kids"`
}

// Stats returns a snapshot of the counters and keys.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Calls:             cloneCounts(s.calls),
		ClientCalls:       cloneCounts(s.clientCall),
		UserCalls:         map[string]map[string]int{},
		SpentRefreshReuse: s.reuse,
		SigningKID:        s.signingKID,
		KIDs:              []string{},
	}
	for u, m := range s.userCall {
		st.UserCalls[u] = cloneCounts(m)
	}
	for _, k := range s.keys {
		st.KIDs = append(st.KIDs, k.kid)
	}
	return st
}

func cloneCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// requestContext is the request's context, also ended when the Sim closes.
func (s *Sim) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.closed, cancel)
	return ctx, func() { stop(); cancel() }
}

// ErrNoSigningKey is returned by the signing methods once every key has been
// removed.
var ErrNoSigningKey = errors.New("trackunitsim: no signing key")
