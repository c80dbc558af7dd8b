package token

import "fmt"

// Limiter bounds detached upstream fetches in flight across every kind;
// share one among the brokers of a process.
type Limiter struct{ slots chan struct{} }

// NewLimiter allows n fetches in flight at once.
func NewLimiter(n int) *Limiter { return &Limiter{slots: make(chan struct{}, n)} }

func (l *Limiter) tryAcquire() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *Limiter) release() { <-l.slots }

// limits are a kind's own cap and the global one.
type limits struct{ global, kind *Limiter }

func newLimits(global *Limiter, perKind int) limits {
	return limits{global: global, kind: NewLimiter(perKind)}
}

// errTooManyFetches is what the excess over a cap gets, at once.
var errTooManyFetches = fmt.Errorf("%w: too many token fetches in flight", ErrUnavailable)

func (l limits) acquire() (func(), error) {
	if !l.kind.tryAcquire() {
		return nil, errTooManyFetches
	}
	if l.global != nil && !l.global.tryAcquire() {
		l.kind.release()
		return nil, errTooManyFetches
	}
	return func() {
		if l.global != nil {
			l.global.release()
		}
		l.kind.release()
	}, nil
}
