package store

// EventsListener is told what Listen's connection hears on
// ChannelEventsNumbered, which the sequencer sends once per batch of newly
// numbered events (any replica's). Its methods run on Listen's goroutine
// and must be quick.
type EventsListener interface {
	// EventsNumbered: a notification arrived.
	EventsNumbered()
	// EventsListening(true) is called once LISTEN is in effect after each
	// connect (notifications sent before it were missed), and
	// EventsListening(false) when the connection is lost.
	EventsListening(ok bool)
}

// SetEventsListener makes Listen also LISTEN for ChannelEventsNumbered, on
// the same connection, and tell l: one direct connection per replica
// serves both the install changes and the event stream. Call it before
// Listen.
func (s *Store) SetEventsListener(l EventsListener) { s.eventsListener = l }
