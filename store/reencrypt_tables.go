package store

import (
	"fmt"
	"strings"
)

// sealedColumn is one encrypted column of a sealed table.
type sealedColumn struct {
	name string // the SQL column holding nonce||ciphertext, e.g. "client_secret_enc"
	aad  string // its name in the associated data, e.g. "client_secret"
}

// keyColumn is one column of a sealed table's primary key.
type keyColumn struct {
	name string
	cast string // the SQL type a text parameter is cast to; "" for text columns
}

// sealedTable describes, for Reencrypt, a group of encrypted columns of a
// table that one key-id column seals, each bound to (table, rowKey, column)
// by its associated data. A table with two key-id columns is two entries
// (api_users: key_id for the registered credentials, token_key_id for the
// tokens); each entry's optimistic lock compares only its own columns.
type sealedTable struct {
	table   string      // the SQL table, also the associated data's table
	key     []keyColumn // the primary key, in index order
	rowKey  func(key []string) string
	keyID   string         // NULL while the row holds no ciphertext
	columns []sealedColumn // each may be NULL on its own
	// version, if set, is a bigint column the optimistic lock compares
	// too; the ciphertexts alone already catch every rewrite, since every
	// seal draws a fresh nonce.
	version string
}

// sealedTables lists every group of stored ciphertexts. A new kind of
// stored secret is one more entry here; a table missing from this list is
// never re-encrypted, and removing its old key would lose its secrets.
var sealedTables = []sealedTable{{
	table:  installsTable,
	key:    []keyColumn{{name: "iris_app_id"}, {name: "account_id", cast: "uuid"}},
	rowKey: func(k []string) string { return InstallKey{IrisAppID: k[0], AccountID: k[1]}.location("").Row },
	keyID:  "key_id",
	columns: []sealedColumn{
		{name: "client_id_enc", aad: columnClientID},
		{name: "client_secret_enc", aad: columnClientSecret},
	},
	version: "credentials_version",
}, {
	table:  apiUsersTable,
	key:    []keyColumn{{name: "name"}},
	rowKey: func(k []string) string { return apiUserLocation(k[0], "").Row },
	keyID:  "key_id",
	columns: []sealedColumn{
		{name: "client_id_enc", aad: columnClientID},
		{name: "client_secret_enc", aad: columnClientSecret},
		{name: "password_enc", aad: columnPassword},
	},
}, {
	// The tokens are sealed separately: a refresh rewrites them (with the
	// current primary) without touching the registered credentials.
	table:  apiUsersTable,
	key:    []keyColumn{{name: "name"}},
	rowKey: func(k []string) string { return apiUserLocation(k[0], "").Row },
	keyID:  "token_key_id",
	columns: []sealedColumn{
		{name: "refresh_token_enc", aad: columnRefreshToken},
		{name: "access_token_enc", aad: columnAccessToken},
	},
}, {
	table:  apiKeysTable,
	key:    []keyColumn{{name: "name"}},
	rowKey: func(k []string) string { return apiKeyLocation(k[0], "").Row },
	keyID:  "key_id",
	columns: []sealedColumn{
		{name: "client_id_enc", aad: columnClientID},
		{name: "client_secret_enc", aad: columnClientSecret},
	},
	version: "credentials_version",
}, {
	table:  sharedTokensTable,
	key:    []keyColumn{{name: "kind"}, {name: "credential"}, {name: "scopes"}},
	rowKey: func(k []string) string { return TokenKey{Kind: k[0], Credential: k[1], Scopes: k[2]}.location().Row },
	keyID:  "key_id",
	columns: []sealedColumn{
		{name: "access_token_enc", aad: columnAccessToken},
	},
}}

// param returns the placeholder for argument n of key column c.
func (c keyColumn) param(n int) string {
	p := fmt.Sprintf("$%d", n)
	if c.cast != "" {
		p += "::" + c.cast
	}
	return p
}

// selectColumns is what readSealed scans: the key columns as text (a uuid
// in the canonical lower-case form the associated data uses), the key id,
// the ciphertexts and the version.
func (t *sealedTable) selectColumns() string {
	cols := make([]string, 0, len(t.key)+len(t.columns)+2)
	for _, k := range t.key {
		cols = append(cols, k.name+"::text")
	}
	cols = append(cols, t.keyID)
	for _, c := range t.columns {
		cols = append(cols, c.name)
	}
	if t.version != "" {
		cols = append(cols, t.version)
	}
	return strings.Join(cols, ", ")
}

// notPrimary selects rows with ciphertexts under another key than $1.
func (t *sealedTable) notPrimary() string {
	return t.keyID + " IS NOT NULL AND " + t.keyID + " <> $1"
}

// keyNames lists the key columns qualified by the table, for ORDER BY and
// row comparisons. Qualified, because a bare name in ORDER BY would mean
// the selected "name::text" output column: a sort by text that no index
// serves, so every batch would read and sort every remaining row.
func (t *sealedTable) keyNames() string {
	names := make([]string, len(t.key))
	for i, k := range t.key {
		names[i] = t.table + "." + k.name
	}
	return strings.Join(names, ", ")
}

// selectSQL reads the next batch in primary-key order: $1 the primary, then
// the cursor's key columns when withCursor, then the limit. Keyset, not
// OFFSET: rows that stay behind (failed, skipped) are not read again.
func (t *sealedTable) selectSQL(withCursor bool) string {
	q := "SELECT " + t.selectColumns() + " FROM " + t.table + " WHERE " + t.notPrimary()
	n := 2
	if withCursor {
		params := make([]string, len(t.key))
		for i, k := range t.key {
			params[i] = k.param(n)
			n++
		}
		q += " AND (" + t.keyNames() + ") > (" + strings.Join(params, ", ") + ")"
	}
	return q + " ORDER BY " + t.keyNames() + fmt.Sprintf(" LIMIT $%d", n)
}

func (t *sealedTable) selectArgs(primary string, after []string, limit int) []any {
	args := []any{primary}
	for _, k := range after {
		args = append(args, k)
	}
	return append(args, limit)
}

// keyMatch is "k1 = $n AND k2 = $n+1 ...".
func (t *sealedTable) keyMatch(n int) string {
	conds := make([]string, len(t.key))
	for i, k := range t.key {
		conds[i] = k.name + " = " + k.param(n+i)
	}
	return strings.Join(conds, " AND ")
}

// rereadSQL reads one row ($2...) again if it is still not under the
// primary ($1).
func (t *sealedTable) rereadSQL() string {
	return "SELECT " + t.selectColumns() + " FROM " + t.table + " WHERE " + t.keyMatch(2) + " AND " + t.notPrimary()
}

func (t *sealedTable) rereadArgs(primary string, key []string) []any {
	args := []any{primary}
	for _, k := range key {
		args = append(args, k)
	}
	return args
}

// updateSQL writes a row's new key id and ciphertexts only if it still
// holds what was read: $1 the primary, then the new ciphertexts, the key
// columns, the old key id, the old ciphertexts and the old version.
func (t *sealedTable) updateSQL() string {
	set := []string{t.keyID + " = $1"}
	n := 2
	for _, c := range t.columns {
		set = append(set, fmt.Sprintf("%s = $%d", c.name, n))
		n++
	}
	where := []string{t.keyMatch(n)}
	n += len(t.key)
	where = append(where, fmt.Sprintf("%s = $%d", t.keyID, n))
	n++
	for _, c := range t.columns {
		where = append(where, fmt.Sprintf("%s IS NOT DISTINCT FROM $%d::bytea", c.name, n))
		n++
	}
	if t.version != "" {
		where = append(where, fmt.Sprintf("%s = $%d", t.version, n))
	}
	return "UPDATE " + t.table + " SET " + strings.Join(set, ", ") + " WHERE " + strings.Join(where, " AND ")
}

func (t *sealedTable) updateArgs(primary string, m move) []any {
	args := []any{primary}
	for _, e := range m.enc {
		args = append(args, e)
	}
	for _, k := range m.row.key {
		args = append(args, k)
	}
	args = append(args, m.row.keyID)
	for _, e := range m.row.enc {
		args = append(args, e)
	}
	if t.version != "" {
		args = append(args, m.row.version)
	}
	return args
}

// remainingSQL counts the rows not under the primary ($1), by key id.
func (t *sealedTable) remainingSQL() string {
	return "SELECT " + t.keyID + ", count(*) FROM " + t.table + " WHERE " + t.notPrimary() + " GROUP BY " + t.keyID
}
