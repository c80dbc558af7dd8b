// Package events delivers the install lifecycle events that store writes
// in the transaction of each change (the outbox): River jobs, one per
// install, POST them to EVENT_WEBHOOK_URL as Standard Webhooks, in order
// and at least once; a periodic River job deletes events past
// EVENT_RETENTION; and a Stream serves WatchEvents from LISTEN/NOTIFY with
// a poll fallback.
package events
