// Package drills holds the broker's failure drills: Postgres cut off in the
// middle of a callback burst, the auth server down past a token's expiry,
// the JWKS endpoint down and rotated under a random-kid flood, the broker
// SIGKILLed under load, and a soak at mixed load. Each asserts that nothing
// is lost and prints its figures.
//
// The full drills are behind the build tag `drills` (`make drills`, minutes);
// without the tag the same scenarios run scaled down to seconds as part of
// `make test`, asserting the same invariants and never a wall-clock
// threshold. They need Postgres (TEST_DATABASE_URL) and the go command, which
// builds the real irisx-broker binary for the drills that run it as a child
// process.
package drills
