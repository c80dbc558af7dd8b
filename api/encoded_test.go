package api

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
)

// Whatever the plain decoder accepts, protojson (as Connect's codec runs
// it) accepts too and decodes to the same message.
func FuzzDecodeGetTokenRequest(f *testing.F) {
	for _, s := range decodeSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPlainDecode(t, data)
	})
}

// decodeSamples are accepted and refused forms; the fuzz corpus starts here.
var decodeSamples = []string{
	`{"irisAppId":"@irisx/bench-app","accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`,
	` { "accountId" : "a" , "scopes" : [ "asset.view" , "account.view" ] , "minValidSeconds" : 30 } `,
	`{}`, `{"scopes":[]}`, `{"minValidSeconds":0}`, `{"minValidSeconds":2147483647}`,
	// Refused by the plain decoder (protojson decides).
	`{"minValidSeconds":2147483648}`, `{"minValidSeconds":-1}`, `{"minValidSeconds":01}`, `{"minValidSeconds":1e2}`,
	`{"minValidSeconds":"30"}`, `{"minValidSeconds":1.0}`, `{"account_id":"a"}`, `{"accountId":null}`,
	`{"accountId":"a","accountId":"b"}`, `{"accountId":"\u0061"}`, `{"accountId":"é"}`, `{"other":1}`,
	`{"accountId":"a",}`, `{"accountId":"a"} x`, `[]`, ``, `{"scopes":["a",]}`, `{"scopes":"a"}`,
}

func TestDecodeGetTokenRequestSamples(t *testing.T) {
	accepted := 0
	for _, s := range decodeSamples {
		if checkPlainDecode(t, []byte(s)) {
			accepted++
		}
	}
	if accepted != 6 {
		t.Errorf("the plain decoder accepted %d samples, want the first 6", accepted)
	}
}

// checkPlainDecode compares the plain decoder with protojson on data and
// reports whether the plain decoder accepted it.
func checkPlainDecode(t *testing.T, data []byte) bool {
	t.Helper()
	var got brokerv1.GetTokenRequest
	if !decodeGetTokenRequest(data, &got) {
		return false
	}
	var want brokerv1.GetTokenRequest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &want); err != nil {
		t.Errorf("%q: accepted by the plain decoder, refused by protojson: %v", data, err)
		return true
	}
	if !proto.Equal(&got, &want) {
		t.Errorf("%q: plain decoder %v, protojson %v", data, &got, &want)
	}
	return true
}
