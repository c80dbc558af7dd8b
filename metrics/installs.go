package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// installCountTTL is how long one count of installs by status is reused:
// the count scans an index, and scrapes from several Prometheus servers
// should not each pay for it.
const installCountTTL = 15 * time.Second

// installCollector exposes irisx_installs{status} from a counting function
// called at scrape time, at most once per installCountTTL.
type installCollector struct {
	desc  *prometheus.Desc
	count func(ctx context.Context) (map[string]int64, error)
	now   func() time.Time

	mu     sync.Mutex
	last   map[string]int64
	lastAt time.Time
}

// RegisterInstallCounts adds the installs-by-status gauge. A failing count
// keeps reporting the last good one (or nothing) rather than failing the scrape.
func (m *Metrics) RegisterInstallCounts(count func(ctx context.Context) (map[string]int64, error)) {
	m.reg.MustRegister(&installCollector{
		desc:  prometheus.NewDesc("irisx_installs", "Installs by status.", []string{"status"}, nil),
		count: count,
		now:   time.Now,
	})
}

func (c *installCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *installCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || c.now().Sub(c.lastAt) > installCountTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		counts, err := c.count(ctx)
		cancel()
		if err == nil {
			c.last, c.lastAt = counts, c.now()
		}
	}
	for status, n := range c.last {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), status)
	}
}
