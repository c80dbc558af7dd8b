package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// What the admin commands (installs, api-users, api-keys) share: each calls
// one of the running service's admin services with IRISX_ADMIN_TOKEN.

// adminHTTPClient is their client: a service that hangs fails the command.
func adminHTTPClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }

// adminToken is IRISX_ADMIN_TOKEN, required.
func adminToken(lookup env) (string, error) {
	tok, ok := lookup("IRISX_ADMIN_TOKEN")
	if !ok || tok == "" {
		return "", errors.New("IRISX_ADMIN_TOKEN: required (a token from the service's ADMIN_API_TOKENS)")
	}
	return tok, nil
}

// withBearer is msg as a Connect request presenting tok.
func withBearer[T any](msg *T, tok string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+tok)
	return req
}

// splitScopes splits a --scopes value at spaces and commas.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}

// printJSONLines writes each message as one line of JSON, for scripts.
func printJSONLines[M proto.Message](w io.Writer, msgs []M) error {
	for _, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
	}
	return nil
}

// timeCell is a table cell for an optional time: RFC 3339, or "-".
func timeCell(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().Format(time.RFC3339)
}
