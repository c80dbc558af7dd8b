package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// hostileInstalls serves one install whose text fields hold terminal
// control sequences, as a database edited by hand (or an older release)
// could.
type hostileInstalls struct {
	brokerv1connect.UnimplementedInstallServiceHandler
}

func (hostileInstalls) ListInstalls(context.Context, *connect.Request[brokerv1.ListInstallsRequest]) (*connect.Response[brokerv1.ListInstallsResponse], error) {
	lastError := "upstream\x1b]0;owned\x07 said\tno\r\n"
	return connect.NewResponse(&brokerv1.ListInstallsResponse{Installs: []*brokerv1.Install{{
		IrisAppId: "@acme/\x1b[2J\x1b[31mfleet\u202e", AccountId: "00000000-0000-4000-8000-000000000001",
		Status: "installed", UpdatedAt: timestamppb.Now(), LastError: &lastError,
	}}}), nil
}

func TestInstallsListEscapesControlCharacters(t *testing.T) {
	_, h := brokerv1connect.NewInstallServiceHandler(hostileInstalls{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	e := mapEnv(map[string]string{"IRISX_ADMIN_TOKEN": "admin-token-for-tests"})
	if err := run(context.Background(), []string{"irisx-broker", "installs", "list", "--server", srv.URL}, e, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, c := range []string{"\x1b", "\x07", "\r", "\u202e"} {
		if strings.Contains(table, c) {
			t.Errorf("table holds %q:\n%q", c, table)
		}
	}
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 2 {
		t.Errorf("table has %d lines, want a header and one row:\n%s", len(lines), table)
	}
	for _, want := range []string{`@acme/\x1b[2J\x1b[31mfleet\u202e`, `upstream\x1b]0;owned\a said\tno\r\n`} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %s:\n%s", want, table)
		}
	}
}
