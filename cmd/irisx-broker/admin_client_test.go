package main

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
)

// A stored error text (it can quote Trackunit's answer) cannot rewrite the
// operator's terminal from the api-users or api-keys table.
func TestAdminTablesEscapeStoredText(t *testing.T) {
	const hostile = "bad\x1b[2J\u202egone"
	var users, keys bytes.Buffer
	if err := printAPIUsers(&users, []*brokerv1.ApiUser{{Name: "u", Username: "x\x1b]0;t\x07", LastError: proto.String(hostile)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := printAPIKeys(&keys, []*brokerv1.ApiKey{{Name: "k", ClientIdHint: "\x1b[1m", LastError: proto.String(hostile)}}, false); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"api-users list": users.String(), "api-keys list": keys.String()} {
		if strings.ContainsAny(out, "\x1b\x07\u202e") {
			t.Errorf("%s printed a control character raw:\n%q", name, out)
		}
		if !strings.Contains(out, `\x1b[2J`) {
			t.Errorf("%s does not show the escaped error:\n%s", name, out)
		}
		if !strings.Contains(out, "-") {
			t.Errorf("%s has no placeholder for a missing last-token time:\n%s", name, out)
		}
	}
}
