package store

// ProfilePruneEvery exposes profilePruneEvery to the package's tests.
const ProfilePruneEvery = profilePruneEvery
