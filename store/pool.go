package store

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolConfig parses databaseURL into a pool configuration whose queries
// need no server-side prepared statements, so the same URL works against
// Postgres directly and through PgBouncer in transaction mode.
//
// pgx's default (QueryExecModeCacheStatement) prepares each statement once
// per connection under a name ("stmtcache_…") and reuses it. Behind a
// transaction-mode pooler the client's "connection" is a different server
// connection from one transaction to the next, so a cached name is missing
// on one server and already taken on another (SQLSTATE 42P05/26000).
// QueryExecModeDescribeExec and CacheDescribe need two round trips that a
// pooler may route to different servers. QueryExecModeExec sends the
// unnamed statement, its parameters (typed from the Go values) and the
// execution in one round trip, so it is correct through any pooler, at the
// cost of Postgres planning each statement again (cheap for this service's
// short indexed queries). Nothing is detected: one mode for both shapes.
//
// A URL that sets default_query_exec_mode itself keeps its choice.
func PoolConfig(databaseURL string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// pgx's message quotes the URL, password included.
		return nil, errors.New("store: database URL cannot be parsed")
	}
	if !strings.Contains(databaseURL, "default_query_exec_mode") {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	return cfg, nil
}

// Open is OpenWith without a configure function.
func Open(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	return OpenWith(ctx, databaseURL, nil)
}
