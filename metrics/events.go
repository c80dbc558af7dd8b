package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// EventObserver counts install lifecycle events and their webhook
// deliveries. Labels are the event type and a short failure reason, never
// an install.
type EventObserver struct {
	written   *prometheus.CounterVec
	delivered prometheus.Counter
	retried   *prometheus.CounterVec
	givenUp   prometheus.Counter
	latency   prometheus.Histogram
}

// RegisterEvents adds the event collectors; call it once.
func (m *Metrics) RegisterEvents() *EventObserver {
	o := &EventObserver{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_events_written_total", Help: "Install lifecycle events committed, by type.",
		}, []string{"type"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "irisx_event_webhooks_delivered_total", Help: "Event webhooks answered with a 2xx.",
		}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_event_webhooks_retried_total", Help: "Failed event webhook attempts that will be retried, by reason.",
		}, []string{"reason"}),
		givenUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "irisx_event_webhooks_given_up_total", Help: "Events whose webhook was given up after the maximum age.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "irisx_event_webhook_delivery_seconds", Help: "Time from an event's commit to its 2xx.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400},
		}),
	}
	m.reg.MustRegister(o.written, o.delivered, o.retried, o.givenUp, o.latency)
	return o
}

// EventWritten counts a committed event.
func (o *EventObserver) EventWritten(eventType string) { o.written.WithLabelValues(eventType).Inc() }

// EventDelivered counts a 2xx and its commit-to-delivery time.
func (o *EventObserver) EventDelivered(d time.Duration) {
	o.delivered.Inc()
	o.latency.Observe(d.Seconds())
}

// EventRetried counts a failed attempt to be retried.
func (o *EventObserver) EventRetried(reason string) { o.retried.WithLabelValues(reason).Inc() }

// EventGivenUp counts an event given up.
func (o *EventObserver) EventGivenUp() { o.givenUp.Inc() }
