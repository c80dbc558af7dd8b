package api

import "context"

// API users and API keys are registered the same way: validate, store
// (replacing one of the same name), then tell this replica's broker to
// forget the name; other replicas hear it by NOTIFY. These two helpers are
// that flow once, for both services.

// invalidator is the part of a broker the registries need.
type invalidator interface{ Invalidate(name string) }

// createCredential validates and stores a credential, then drops the
// cached tokens of its name. Both errors go through validationError, so a
// field the store refuses is named like one the validation refuses.
func createCredential[T any](ctx context.Context, validate func() error, create func(context.Context) (T, error), name func(T) string, b invalidator) (T, error) {
	var zero T
	if err := validate(); err != nil {
		return zero, validationError(err)
	}
	got, err := create(ctx)
	if err != nil {
		return zero, validationError(err)
	}
	if b != nil {
		b.Invalidate(name(got))
	}
	return got, nil
}

// deleteCredential removes the credential of name and drops its cached
// tokens.
func deleteCredential(ctx context.Context, name string, del func(context.Context, string) error, b invalidator) error {
	if name == "" {
		return invalidArgument("name is required")
	}
	if err := del(ctx, name); err != nil {
		return err
	}
	if b != nil {
		b.Invalidate(name)
	}
	return nil
}
