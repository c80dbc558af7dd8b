// Package telemetrytest holds what tests of traced code share: the text of
// every exported span, to scan for secrets.
package telemetrytest

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Everything is every string the spans expose: names, attributes, events
// and their attributes, statuses, links' attributes and resources, one a
// line, so a test can assert that no secret appears anywhere in them.
func Everything(spans tracetest.SpanStubs) string {
	var b strings.Builder
	kvs := func(as []attribute.KeyValue) {
		for _, a := range as {
			b.WriteString(string(a.Key) + "=" + a.Value.String() + "\n")
		}
	}
	for _, s := range spans {
		b.WriteString(s.Name + "\n" + s.Status.Description + "\n")
		kvs(s.Attributes)
		for _, e := range s.Events {
			b.WriteString(e.Name + "\n")
			kvs(e.Attributes)
		}
		for _, l := range s.Links {
			kvs(l.Attributes)
		}
		if s.Resource != nil {
			kvs(s.Resource.Attributes())
		}
	}
	return b.String()
}
