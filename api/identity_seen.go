package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/store"
)

// Bounds of the unknown body field names recorded per callback: the body is
// attacker input until the token is checked, and 64 KiB of one-letter keys
// must not become a 64 KiB log line.
const (
	maxUnknownFields   = 20
	maxUnknownFieldLen = 64
)

// knownBodyFields are the installBody members. encoding/json matches keys
// case-insensitively, so "TYPE" fills Type and is not unknown either.
var knownBodyFields = []string{"type", "irisAppId", "accountId", "clientId", "clientSecret"}

// unknownBodyFields returns the sorted, escaped names of the body's members
// the broker does not know, at most maxUnknownFields (the last entry then
// says how many more); nil when there are none or the body is no object.
// Values are never looked at.
func unknownBodyFields(raw []byte) []string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil
	}
	var names []string
	for k := range m {
		if !slices.ContainsFunc(knownBodyFields, func(f string) bool { return strings.EqualFold(f, k) }) {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	more := len(names) - maxUnknownFields
	if more > 0 {
		names = names[:maxUnknownFields]
	}
	for i, n := range names {
		names[i] = identity.Sanitize(n, maxUnknownFieldLen)
	}
	if more > 0 {
		names = append(names, "…"+strconv.Itoa(more)+" more")
	}
	return names
}

// ProfileStore keeps identity profiles for the admin page.
type ProfileStore interface {
	RecordIdentityProfile(ctx context.Context, p store.IdentityProfile) error
	ListIdentityProfiles(ctx context.Context, verdict string, limit int) ([]store.IdentityProfile, error)
}

// Bounds of the profile recorder: recording must never fail or slow down a
// callback, so profiles go through a small queue to one writer, and refused
// ones (anyone can send them) are admitted at a bounded rate.
const (
	profileQueue       = 64
	profileWriteTime   = 2 * time.Second
	refusedPerSecond   = 5
	refusedBurst       = 20
	droppedLogInterval = time.Minute
)

// ProfileRecorder writes identity profiles to a ProfileStore in the
// background, best effort: Record never blocks, and a full queue, the rate
// cap on refused tokens or a failed insert only drop the profile (the log
// line has it regardless).
type ProfileRecorder struct {
	store  ProfileStore
	logger *slog.Logger
	now    func() time.Time
	queue  chan store.IdentityProfile

	mu      sync.Mutex
	tokens  float64 // refused profiles that may still be admitted
	refill  time.Time
	dropped atomic.Int64
}

// NewProfileRecorder returns a recorder; Run must be running for profiles
// to be written.
func NewProfileRecorder(st ProfileStore, logger *slog.Logger, now func() time.Time) *ProfileRecorder {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &ProfileRecorder{store: st, logger: logger, now: now,
		queue: make(chan store.IdentityProfile, profileQueue), tokens: refusedBurst}
}

// Record queues one profile, or drops it.
func (r *ProfileRecorder) Record(p identity.Profile, unknown []string) {
	now := r.now()
	if p.Verdict == identity.VerdictRefused && !r.admitRefused(now) {
		r.dropped.Add(1)
		return
	}
	row := store.IdentityProfile{
		SeenAt: now, Verdict: p.Verdict, Rule: p.Rule, Alg: p.Alg, Kid: p.Kid, Typ: p.Typ,
		Iss: p.Iss, Aud: p.Aud, Claims: p.Claims, ClaimCount: p.ClaimCount, UnknownFields: unknown,
	}
	if p.HasAge {
		row.Age = &p.Age
	}
	if p.HasLifetime {
		row.Lifetime = &p.Lifetime
	}
	select {
	case r.queue <- row:
	default:
		r.dropped.Add(1)
	}
}

// admitRefused is a token bucket of refusedPerSecond, burst refusedBurst.
func (r *ProfileRecorder) admitRefused(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.refill.IsZero() {
		r.tokens = min(refusedBurst, r.tokens+now.Sub(r.refill).Seconds()*refusedPerSecond)
	}
	r.refill = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// Run writes queued profiles until ctx ends, each insert bounded by
// profileWriteTime, and logs now and then how many were dropped.
func (r *ProfileRecorder) Run(ctx context.Context) {
	tick := time.NewTicker(droppedLogInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n := r.dropped.Swap(0); n > 0 {
				r.logger.Info("identity profiles dropped (queue full or refused tokens over the rate cap)", "dropped", n)
			}
		case p := <-r.queue:
			wctx, cancel := context.WithTimeout(ctx, profileWriteTime)
			if err := r.store.RecordIdentityProfile(wctx, p); err != nil && ctx.Err() == nil {
				r.logger.Warn("identity profile not recorded", "error", err)
			}
			cancel()
		}
	}
}

// seen logs the one line a checked identity token gets, with its profile
// and the callback's unknown body fields (nil: the body was not read, the
// token being refused first), and hands both to the recorder.
func (h *installHandler) seen(c echo.Context, p identity.Profile, unknown []string) {
	attrs := p.LogAttrs()
	if unknown != nil {
		attrs = append(attrs, slog.Any("unknown_fields", unknown))
	}
	attrs = append(attrs, slog.String("request_id", c.Response().Header().Get(echo.HeaderXRequestID)))
	h.logger.LogAttrs(c.Request().Context(), slog.LevelInfo, "identity token", attrs...)
	if h.profiles != nil {
		h.profiles.Record(p, unknown)
	}
}

func nonNilNames(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
