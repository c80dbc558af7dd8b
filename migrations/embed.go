// Package migrations owns the database schema: numbered golang-migrate files
// (NNNN_name.up.sql / NNNN_name.down.sql) embedded in the binary. A merged
// migration is never edited; a change is a new number.
package migrations

import "embed"

// FS holds every migration file, for golang-migrate's iofs source.
//
//go:embed *.sql
var FS embed.FS
