package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/store"
)

// Page sizes of ListEvents.
const (
	defaultEventPage = 100
	maxEventPage     = 1000
)

// EventsDeps serve EventService and the admin page's event list.
type EventsDeps struct {
	Store EventReader
	// Watch streams events after an id (events.Stream.Watch).
	Watch func(ctx context.Context, afterSeq int64, fn func(store.LifecycleEvent) error) error
	// Redeliver queues one more delivery (events.Deliverer.Redeliver); nil
	// without a webhook.
	Redeliver func(ctx context.Context, seq int64) (store.LifecycleEvent, error)
}

// EventReader reads the lifecycle events.
type EventReader interface {
	ListLifecycleEvents(ctx context.Context, afterSeq int64, limit int) ([]store.LifecycleEvent, error)
	InstallLifecycleEvents(ctx context.Context, irisAppID, accountID string, limit int) ([]store.LifecycleEvent, error)
}

type eventService struct{ d *EventsDeps }

var _ brokerv1connect.EventServiceHandler = (*eventService)(nil)

// mountEvents serves EventService (admin or internal tokens, RedeliverEvent
// admin only) and the admin page's lifecycle events.
//
// mount wraps the handler in the bearer check of both token sets, so a
// call without either is refused before its body is read; the interceptor
// then keeps RedeliverEvent to admin tokens.
func mountEvents(e *echo.Echo, mount func(string, http.Handler), d *EventsDeps, internal, admin tokenSet, logger *slog.Logger, opts ...connect.HandlerOption) {
	if d == nil {
		return
	}
	registerAdminEvents(e, d, admin, logger)
	opts = append(opts, connect.WithInterceptors(&eventsAuth{internal: internal, admin: admin}, errorInterceptor(logger)))
	mount(brokerv1connect.NewEventServiceHandler(&eventService{d: d}, opts...))
}

// ListEvents returns one page of events, oldest first.
func (s *eventService) ListEvents(ctx context.Context, req *connect.Request[brokerv1.ListEventsRequest]) (*connect.Response[brokerv1.ListEventsResponse], error) {
	after, err := store.ParseEventID(req.Msg.GetAfterId())
	if err != nil {
		return nil, invalidArgument("afterId is not an event id")
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size < 0:
		return nil, invalidArgument("pageSize must not be negative")
	case size == 0:
		size = defaultEventPage
	case size > maxEventPage:
		size = maxEventPage
	}
	evs, err := s.d.Store.ListLifecycleEvents(ctx, after, size)
	if err != nil {
		return nil, eventsError(err)
	}
	resp := &brokerv1.ListEventsResponse{NextAfterId: req.Msg.GetAfterId()}
	for i := range evs {
		resp.Events = append(resp.Events, eventMessage(&evs[i]))
		resp.NextAfterId = evs[i].ID()
	}
	return connect.NewResponse(resp), nil
}

// WatchEvents replays the events after afterId, then follows new ones.
func (s *eventService) WatchEvents(ctx context.Context, req *connect.Request[brokerv1.WatchEventsRequest], stream *connect.ServerStream[brokerv1.WatchEventsResponse]) error {
	after, err := store.ParseEventID(req.Msg.GetAfterId())
	if err != nil {
		return invalidArgument("afterId is not an event id")
	}
	err = s.d.Watch(ctx, after, func(ev store.LifecycleEvent) error {
		return stream.Send(&brokerv1.WatchEventsResponse{Event: eventMessage(&ev)})
	})
	if ctx.Err() != nil {
		return nil // the caller went away
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return eventsError(err)
}

// RedeliverEvent queues one more delivery of an event.
func (s *eventService) RedeliverEvent(ctx context.Context, req *connect.Request[brokerv1.RedeliverEventRequest]) (*connect.Response[brokerv1.RedeliverEventResponse], error) {
	seq, err := store.ParseEventID(req.Msg.GetId())
	if err != nil || seq == 0 {
		return nil, invalidArgument("id is not an event id")
	}
	if s.d.Redeliver == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("no EVENT_WEBHOOK_URL is configured"))
	}
	ev, err := s.d.Redeliver(ctx, seq)
	if err != nil {
		return nil, eventsError(err)
	}
	return connect.NewResponse(&brokerv1.RedeliverEventResponse{Event: eventMessage(&ev)}), nil
}

// eventsError maps a store error to a Connect error with a safe message.
func eventsError(err error) error {
	switch {
	case errors.Is(err, store.ErrEventDeliveryOff):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("no EVENT_WEBHOOK_URL is configured"))
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New("no such event"))
	case errors.Is(err, store.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid argument"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("the call was canceled"))
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("the database is unavailable; retry later"))
}

func eventMessage(ev *store.LifecycleEvent) *brokerv1.Event {
	return &brokerv1.Event{Id: ev.ID(), Type: ev.Type, OccurredAt: timestamppb.New(ev.OccurredAt),
		IrisAppId: ev.IrisAppID, AccountId: ev.AccountID, Status: string(ev.Status)}
}

// eventsAuth admits internal or admin tokens, from the headers alone, for
// unary and streaming calls; RedeliverEvent needs an admin token.
type eventsAuth struct{ internal, admin tokenSet }

func (a *eventsAuth) allowed(procedure string, h http.Header) bool {
	tok := bearer(h.Get("Authorization"))
	if procedure == brokerv1connect.EventServiceRedeliverEventProcedure {
		return a.admin.contains(tok)
	}
	// Both sets are checked, so the time taken does not say which matched.
	inAdmin, inInternal := a.admin.contains(tok), a.internal.contains(tok)
	return inAdmin || inInternal
}

func (a *eventsAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !a.allowed(req.Spec().Procedure, req.Header()) {
			return nil, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
		}
		return next(ctx, req)
	}
}

func (a *eventsAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *eventsAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !a.allowed(conn.Spec().Procedure, conn.RequestHeader()) {
			return connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
		}
		return next(ctx, conn)
	}
}
