package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// Bearer tokens the rig configures on every broker it starts.
const (
	InternalToken = "bench-internal-token-0123456789"
	AdminToken    = "bench-admin-token-0123456789ab"
)

// GetTokenPath is the Connect route of TokenService.GetToken.
const GetTokenPath = "/irisx.broker.v1.TokenService/GetToken"

// TokenRequestBody is the Connect-JSON body of GetToken for one install.
func TokenRequestBody(app, account string) []byte {
	b, _ := json.Marshal(map[string]string{"irisAppId": app, "accountId": account}) // strings cannot fail
	return b
}

// TokenAnswer is a GetToken answer over Connect-JSON: the token on
// success, the Connect error code otherwise.
type TokenAnswer struct {
	HTTPStatus  int
	Code        string // Connect error code, "" on success
	AccessToken string
	ExpiresAt   string
	// Raw is the body as received.
	Raw []byte
}

// GetTokenJSON calls GetToken with a Connect-JSON POST, as curl would.
func GetTokenJSON(ctx context.Context, client *http.Client, internalURL string, body []byte) (TokenAnswer, error) {
	return TokenJSON(ctx, client, internalURL, GetTokenPath, body)
}

// TokenJSON calls a TokenService route (GetTokenPath or
// GetAPIUserTokenPath; both answer a GetTokenResponse) with a Connect-JSON
// POST and the rig's internal bearer.
func TokenJSON(ctx context.Context, client *http.Client, internalURL, path string, body []byte) (TokenAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, internalURL+path, bytes.NewReader(body))
	if err != nil {
		return TokenAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+InternalToken)
	resp, err := client.Do(req)
	if err != nil {
		return TokenAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return TokenAnswer{}, err
	}
	a := TokenAnswer{HTTPStatus: resp.StatusCode, Raw: raw}
	var out struct {
		Code        string `json:"code"`
		AccessToken string `json:"accessToken"`
		ExpiresAt   string `json:"expiresAt"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return a, fmt.Errorf("harness: %s answered %d with a body that is not JSON", path, resp.StatusCode)
	}
	a.Code, a.AccessToken, a.ExpiresAt = out.Code, out.AccessToken, out.ExpiresAt
	if resp.StatusCode == http.StatusOK && a.AccessToken == "" {
		return a, fmt.Errorf("harness: %s answered 200 without a token", path)
	}
	return a, nil
}

// TokenClient returns a Connect client of TokenService; pass
// connect.WithGRPC() for gRPC over an h2c client.
func TokenClient(client *http.Client, internalURL string, opts ...connect.ClientOption) brokerv1connect.TokenServiceClient {
	return brokerv1connect.NewTokenServiceClient(client, internalURL, opts...)
}

// GetToken calls GetToken through a Connect client with the rig's bearer.
func GetToken(ctx context.Context, c brokerv1connect.TokenServiceClient, app, account string) (*brokerv1.GetTokenResponse, error) {
	req := connect.NewRequest(&brokerv1.GetTokenRequest{IrisAppId: app, AccountId: account})
	req.Header().Set("Authorization", "Bearer "+InternalToken)
	resp, err := c.GetToken(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// InstallClient returns a Connect (protobuf) client of InstallService.
func InstallClient(client *http.Client, internalURL string) brokerv1connect.InstallServiceClient {
	return brokerv1connect.NewInstallServiceClient(client, internalURL)
}

// ListInstalls reads one page with the rig's admin bearer.
func ListInstalls(ctx context.Context, c brokerv1connect.InstallServiceClient, pageSize int32, pageToken string) (*brokerv1.ListInstallsResponse, error) {
	req := connect.NewRequest(&brokerv1.ListInstallsRequest{PageSize: pageSize, PageToken: pageToken})
	req.Header().Set("Authorization", "Bearer "+AdminToken)
	resp, err := c.ListInstalls(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// ErrNoSample is ScrapeMetric's error for a sample the endpoint does not
// list, such as a labelled counter never incremented.
var ErrNoSample = errors.New("harness: no sample")

// ScrapeMetric reads one unlabelled sample (e.g. go_goroutines) from a
// Prometheus text endpoint.
func ScrapeMetric(ctx context.Context, client *http.Client, metricsURL, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("harness: %s answered %d", metricsURL, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w %s at %s", ErrNoSample, name, metricsURL)
}
