package store

import "context"

// ProfilePruneEvery exposes profilePruneEvery to the package's tests.
const ProfilePruneEvery = profilePruneEvery

// Retry exposes retry to the package's tests.
func (s *Store) Retry(ctx context.Context, fn func() error) error { return s.retry(ctx, fn) }
