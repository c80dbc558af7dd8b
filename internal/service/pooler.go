package service

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// poolerHint makes a pooler's refusal of a startup parameter actionable.
// PgBouncer answers a startup packet carrying a parameter it does not know
// with FATAL 08P01 "unsupported startup parameter: NAME". When the service
// added statement_timeout itself (no DATABASE_DIRECT_URL, so it took
// DATABASE_URL for a direct connection), the fix is the deployment shape
// docs/DEPLOY.md describes, not the parameter: with LISTEN through a
// transaction pooler this replica would never hear of uninstalls, so
// refusing to start is right and only the message needs saying.
func poolerHint(err error, addedStatementTimeout bool) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || !strings.HasPrefix(pgErr.Message, "unsupported startup parameter") {
		return err
	}
	if addedStatementTimeout && strings.HasSuffix(pgErr.Message, "statement_timeout") {
		return fmt.Errorf("%w: DATABASE_URL goes through a connection pooler such as PgBouncer: set DATABASE_DIRECT_URL "+
			"to a direct connection to Postgres (used for LISTEN and migrations) and statement_timeout on the broker's role "+
			"(ALTER ROLE … SET statement_timeout = '10s'); see docs/DEPLOY.md", err)
	}
	return fmt.Errorf("%w: the pooler in front of the database refuses a parameter of DATABASE_URL's query string: "+
		"remove it, or set it on the role (ALTER ROLE … SET) instead; see docs/DEPLOY.md", err)
}
