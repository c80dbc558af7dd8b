package testdb

import (
	"context"
	"fmt"

	"github.com/testcontainers/testcontainers-go/modules/postgres"
)

// containerImage is the Postgres the container fallback runs.
const containerImage = "postgres:16-alpine"

// startContainer starts a Postgres container for this test process and
// returns its URL. Ryuk, testcontainers' reaper, removes it after the
// process exits.
func startContainer(ctx context.Context) (url string, err error) {
	// testcontainers panics in some set-ups without a Docker host; that is
	// the same "no Postgres" failure as an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	c, err := postgres.Run(ctx, containerImage,
		postgres.WithDatabase("postgres"),
		postgres.WithUsername("postgres"),
		postgres.WithPassword("postgres"),
		postgres.BasicWaitStrategies(),
	)
	if err != nil {
		return "", err
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}
