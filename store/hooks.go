package store

import (
	"sync/atomic"
)

// OnInstallChanged registers fn to be called, synchronously and after the
// commit, whenever this Store changes an existing install (a callback that
// replaced or erased credentials, a rejection marked). The caller that
// answers the callback therefore never serves a token of the replaced
// credentials, even before the NOTIFY comes back. Set it before use.
func (s *Store) OnInstallChanged(fn func(irisAppID, accountID string)) {
	s.onChange.Store(&fn)
}

func (s *Store) changed(key InstallKey) {
	if fn := s.onChange.Load(); fn != nil {
		(*fn)(key.IrisAppID, key.AccountID)
	}
}

// WithListenURL makes Listen use its own connection string (an unpooled,
// direct connection: DATABASE_DIRECT_URL) instead of the pool's. An
// unparsable URL is ignored here and reported by Listen.
//
// The URL is parsed as the migrations parse the same URL (PoolConfig), so
// pool settings in it (pool_max_conns=…) are understood, not sent to
// Postgres as session parameters, which it refuses ("unrecognized
// configuration parameter"), leaving the replica deaf and never ready.
// Without a connect_timeout of its own a connect gives up after the pool's
// default (5 s), so a server that accepts and never answers is retried.
func WithListenURL(databaseURL string) Option {
	return func(s *Store) {
		cfg, err := PoolConfig(databaseURL)
		if err != nil {
			s.listenConfigErr = true
			return
		}
		if cfg.ConnConfig.ConnectTimeout == 0 {
			cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
		}
		s.listenConfig = cfg.ConnConfig
	}
}

type changeHook = atomic.Pointer[func(irisAppID, accountID string)]
