package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/store"
)

// installEventsShown is how many events GetInstall returns.
const installEventsShown = 50

// InstallReader lists installs for operators.
type InstallReader interface {
	ListInstalls(ctx context.Context, f store.ListFilter) ([]store.Install, error)
	GetInstall(ctx context.Context, irisAppID, accountID string, events int) (store.Install, []store.Event, error)
	// PageToken and ParsePageToken make and check the opaque, authenticated
	// cursor of a listing; a token not issued for these filters is
	// store.ErrInvalid.
	PageToken(after store.InstallKey, app string, status store.InstallStatus) string
	ParsePageToken(token, app string, status store.InstallStatus) (store.InstallKey, error)
}

type installService struct {
	store InstallReader
}

var _ brokerv1connect.InstallServiceHandler = (*installService)(nil)

// ListInstalls returns one keyset page of installs.
func (s *installService) ListInstalls(ctx context.Context, req *connect.Request[brokerv1.ListInstallsRequest]) (*connect.Response[brokerv1.ListInstallsResponse], error) {
	m := req.Msg
	page, err := listInstallsPage(ctx, s.store, m.GetIrisAppId(), m.GetStatus(), int(m.GetPageSize()), m.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ListInstallsResponse{NextPageToken: page.next}
	for _, in := range page.installs {
		resp.Installs = append(resp.Installs, installMessage(in))
	}
	return connect.NewResponse(resp), nil
}

// GetInstall returns one install with its latest events.
func (s *installService) GetInstall(ctx context.Context, req *connect.Request[brokerv1.GetInstallRequest]) (*connect.Response[brokerv1.GetInstallResponse], error) {
	m := req.Msg
	if err := checkInstallKey(m.GetIrisAppId(), m.GetAccountId()); err != nil {
		return nil, err
	}
	in, events, err := s.store.GetInstall(ctx, m.GetIrisAppId(), canonicalUUID(m.GetAccountId()), installEventsShown)
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.GetInstallResponse{Install: installMessage(in)}
	for _, e := range events {
		resp.Events = append(resp.Events, &brokerv1.InstallEvent{
			Id: e.ID, Type: e.Type, Outcome: e.Outcome, Jti: e.JTI, RemoteAddr: e.RemoteAddr,
			EventAt: timestamppb.New(e.EventAt), ReceivedAt: timestamppb.New(e.ReceivedAt),
		})
	}
	return connect.NewResponse(resp), nil
}

// installPage is one page of a listing, shared by the RPC and the admin page.
type installPage struct {
	installs []store.Install
	next     string
}

// listInstallsPage validates the filters and page token and reads one page.
// It asks for one row more than the page size to know whether a next page
// exists without a count.
func listInstallsPage(ctx context.Context, r InstallReader, app, status string, size int, pageToken string) (installPage, error) {
	// As AIP-158 has it: a negative size is an error, zero is the default,
	// and a size over the maximum is served as the maximum.
	switch {
	case size < 0:
		return installPage{}, invalidArgument("pageSize must not be negative")
	case size == 0:
		size = store.DefaultListLimit
	case size > store.MaxListLimit:
		size = store.MaxListLimit
	}
	if app != "" && !validIrisAppID(app) {
		return installPage{}, invalidArgument(irisAppIDRule)
	}
	st := store.InstallStatus(status)
	switch st {
	case "", store.StatusInstalled, store.StatusUninstalled, store.StatusCredentialsRejected:
	default:
		return installPage{}, invalidArgument("status must be installed, uninstalled or credentials_rejected")
	}
	f := store.ListFilter{IrisAppID: app, Status: st, Limit: size + 1}
	if pageToken != "" {
		after, err := r.ParsePageToken(pageToken, app, st)
		if err != nil {
			return installPage{}, err
		}
		f.After = &after
	}
	installs, err := r.ListInstalls(ctx, f)
	if err != nil {
		return installPage{}, err
	}
	page := installPage{installs: installs}
	if len(installs) > size {
		page.installs = installs[:size]
		last := page.installs[size-1]
		page.next = r.PageToken(store.InstallKey{IrisAppID: last.IrisAppID, AccountID: last.AccountID}, app, st)
	}
	return page, nil
}

func installMessage(in store.Install) *brokerv1.Install {
	m := &brokerv1.Install{
		IrisAppId:     in.IrisAppID,
		AccountId:     in.AccountID,
		Status:        string(in.Status),
		UpdatedAt:     timestamppb.New(in.UpdatedAt),
		UninstalledAt: optionalTime(in.UninstalledAt),
		KeyId:         in.KeyID,
		LastTokenAt:   optionalTime(in.LastTokenAt),
	}
	// An install only ever seen uninstalled has no install time.
	if !in.InstalledAt.IsZero() {
		m.InstalledAt = timestamppb.New(in.InstalledAt)
	}
	if in.LastError != "" {
		m.LastError = &in.LastError
	}
	return m
}

func optionalTime(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
