package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/clip"
)

// maxAppIDLen matches the CHECK on installs.iris_app_id; it also keeps every
// NOTIFY payload far below Postgres's 8000-byte limit.
const maxAppIDLen = 255

// Bounds for untrusted strings written to the event log.
const (
	maxTypeLen       = 64
	maxJTILen        = 256
	maxRemoteAddrLen = 128
	maxLastErrorLen  = 256
)

// Column names used in the associated data of the installs ciphertexts.
const (
	installsTable      = "installs"
	columnClientID     = "client_id"
	columnClientSecret = "client_secret"
)

// InstallKey identifies one install.
type InstallKey struct {
	IrisAppID string
	AccountID string
}

// installKey validates an install key and puts the account id in the
// canonical lower-case form Postgres returns for a uuid. The associated data
// of every ciphertext contains it, so "ABC..." and "abc..." must never be
// two different row keys.
func installKey(irisAppID, accountID string) (InstallKey, error) {
	if irisAppID == "" || len(irisAppID) > maxAppIDLen || !utf8.ValidString(irisAppID) || strings.ContainsRune(irisAppID, 0) {
		return InstallKey{}, fmt.Errorf("%w: irisAppId must be 1 to %d bytes of UTF-8", ErrInvalid, maxAppIDLen)
	}
	id, err := uuid.Parse(accountID)
	if err != nil {
		return InstallKey{}, fmt.Errorf("%w: accountId is not a UUID", ErrInvalid)
	}
	return InstallKey{IrisAppID: irisAppID, AccountID: id.String()}, nil
}

// location is where a credential column of this install lives, for the
// ciphertext's associated data. The account id is a canonical UUID and
// holds no '/', so the row key is unambiguous.
func (k InstallKey) location(column string) crypto.Location {
	return crypto.Location{Table: installsTable, Row: k.IrisAppID + "/" + k.AccountID, Column: column}
}

// changePayload is the NOTIFY payload on ChannelInstallChanged.
type changePayload struct {
	IrisAppID string `json:"irisAppId"`
	AccountID string `json:"accountId"`
}

func (k InstallKey) notifyPayload() string {
	b, _ := json.Marshal(changePayload(k)) // cannot fail for strings
	return string(b)
}

// clean makes an untrusted string storable in a text column (valid UTF-8,
// no NUL, which Postgres refuses) and bounds its length.
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	return clip.Bytes(s, n)
}
