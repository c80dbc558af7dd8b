package store

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolConfig parses databaseURL into a pool configuration whose queries
// need no server-side prepared statements, unless the URL asks for them, so
// the same URL works against Postgres directly and through PgBouncer in
// transaction mode.
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
// cost of Postgres parsing and planning each statement again. Nothing is
// detected here: the service, which knows from DATABASE_DIRECT_URL being
// unset that DATABASE_URL is Postgres itself, asks for
// default_query_exec_mode=cache_statement in the URL then (River's large
// job statements made planning half of the event write path's Postgres
// CPU).
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
