package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/store"
)

// FuzzDecodeInstallBody: the decoder never panics, refuses with a 400 and a
// message that never echoes a value, and what it accepts satisfies every
// rule of the contract.
func FuzzDecodeInstallBody(f *testing.F) {
	for _, seed := range []string{
		`{"type":"INSTALLED","irisAppId":"@organization/appname","accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3","clientId":"0oa10o3h43eulvWtz358","clientSecret":"wZtQppu1huik4cYBAhYXnZS29pSudTBne2SE6WEM5C5"}`,
		`{"type":"UNINSTALLED","irisAppId":"@o/a","accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`,
		`{"type":"X","irisAppId":"@o/a","accountId":"6B5CB246-7945-4BB6-BEC5-2A1413FFD1B3","extra":{"a":[1,2]}}`,
		`{"type":"INSTALLED","irisAppId":"@o/a","accountId":"{6b5cb246-7945-4bb6-bec5-2a1413ffd1b3}","clientId":"a","clientSecret":"b"}`,
		`{"type":null}`, `[]`, `"x"`, `null`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := decodeInstallBody(raw)
		if err != nil {
			var pe *publicError
			if !errors.As(err, &pe) || pe.answer.status != http.StatusBadRequest || pe.answer.code != codeInvalidRequest {
				t.Fatalf("error %v is not a 400 invalid_request", err)
			}
			if len(raw) > 8 && strings.Contains(pe.answer.message, string(raw)) {
				t.Fatalf("message echoes the body: %q", pe.answer.message)
			}
			return
		}
		if b.Type == "" || b.IrisAppID == "" || len(b.AccountID) != 36 {
			t.Fatalf("accepted a body missing required fields: %+v", b)
		}
		if _, err := uuid.Parse(b.AccountID); err != nil {
			t.Fatalf("accepted a non-UUID accountId %q", b.AccountID)
		}
		if b.Type == store.TypeInstalled && (b.ClientID.IsZero() || b.ClientSecret.IsZero()) {
			t.Fatal("accepted INSTALLED without credentials")
		}
		_ = canonicalUUID(b.AccountID) // must not panic on anything accepted
	})
}
