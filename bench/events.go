package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/client"
)

// Targets of the events phase.
const (
	eventsRateTarget    = 1000.0
	eventsP99Target     = time.Second
	eventsLatencyTarget = 1.15
	// eventsConns: concurrent INSTALLED callbacks, as the issue states.
	eventsConns = 16
	// eventsDrain bounds the wait for the last deliveries after the load.
	eventsDrain = 20 * time.Second
)

// eventsPhase measures install lifecycle events end to end: first-install
// callbacks against a broker posting webhooks to a receiver in the bench
// process, and the same load against a broker with no webhook URL.
func (r *runner) eventsPhase(ctx context.Context) (err error) {
	const area = "Events"
	// A broker without EVENT_WEBHOOK_URL on the same database would take
	// delivery jobs and complete them undelivered (webhooks off), so this
	// phase runs its own two children only, as the scale phase does.
	if err := stopChild(r.primary); err != nil {
		return err
	}
	r.primary = nil
	began := time.Now()
	n := r.sc.eventsCallbacks
	cbs, err := harness.Presign(ctx, r.sim.Sim, harness.App, 3*n, runtime.NumCPU(), false)
	if err != nil {
		return err
	}
	r.report.detail(area, "pre-signed %d callbacks (RS256, each a new account) in %v",
		len(cbs), time.Since(began).Round(time.Millisecond))
	r.report.Method = append(r.report.Method, eventsMethod(r.sc))

	recv, err := startEventReceiver()
	if err != nil {
		return err
	}
	defer recv.close()
	cfg := loadgen.Config{Workers: eventsConns, Warmup: r.sc.warmup / 2, Duration: r.sc.measure}

	// Off, on, then held: three children alike but for the webhook.
	off, _, err := r.eventsRun(ctx, cfg, eventsOff, recv, cbs[:n])
	if err != nil {
		return err
	}
	r.report.result(area, "callbacks, events off (no EVENT_WEBHOOK_URL)", off)
	on, d, err := r.eventsRun(ctx, cfg, eventsOn, recv, cbs[n:2*n])
	if err != nil {
		return err
	}
	r.report.result(area, "callbacks, events on (webhook to a loopback receiver)", on)
	held, _, err := r.eventsRun(ctx, cfg, eventsHeld, recv, cbs[2*n:])
	if err != nil {
		return err
	}
	r.report.result(area, "callbacks, events on with every delivery held by the receiver (the write path alone)", held)
	r.report.detail(area, "receiver: %d deliveries of %d measured events (%d requests in all, %d failed verification); "+
		"last delivered %v after the first measured 200", d.delivered, d.measured, d.requests, d.unverified,
		d.span.Round(time.Millisecond))
	if d.unverified > 0 || d.delivered < d.measured || d.measured == 0 {
		return fmt.Errorf("events: %d of %d measured events delivered, %d unverified signatures",
			d.delivered, d.measured, d.unverified)
	}

	rate := float64(d.delivered) / d.span.Seconds()
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("events/s commit to delivered 2xx, %d concurrent callbacks", eventsConns),
		Value: fmt.Sprintf("%.0f/s", rate), Baseline: perSecond(on) + " (callbacks/s)",
		Target: fmt.Sprintf("≥ %.0f/s", eventsRateTarget), Pass: pass(rate >= eventsRateTarget)})
	p50, p99 := time.Duration(d.lat.ValueAtQuantile(50)), time.Duration(d.lat.ValueAtQuantile(99))
	r.report.add(Figure{Area: area, Name: "p99 commit to delivery",
		Value: ms(p99), Baseline: "p50 " + ms(p50), Target: "≤ " + ms(eventsP99Target), Pass: pass(p99 <= eventsP99Target)})
	ratio := float64(on.Quantile(50)) / float64(off.Quantile(50))
	r.report.add(Figure{Area: area, Name: "callback latency, events on vs off (p50 / p99)",
		Value:    fmt.Sprintf("%s / %s", ms(on.Quantile(50)), ms(on.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s (off)", ms(off.Quantile(50)), ms(off.Quantile(99))),
		Ratio:    fmt.Sprintf("%.2f / %.2f", ratio, float64(on.Quantile(99))/float64(off.Quantile(99))),
		Target:   fmt.Sprintf("p50 ratio ≤ %.2f", eventsLatencyTarget), Pass: pass(ratio <= eventsLatencyTarget)})
	r.report.add(Figure{Area: area, Name: "callback latency, webhooks on but deliveries held, vs off (p50 / p99)",
		Value:    fmt.Sprintf("%s / %s", ms(held.Quantile(50)), ms(held.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s (off)", ms(off.Quantile(50)), ms(off.Quantile(99))),
		Ratio: fmt.Sprintf("%.2f / %.2f", float64(held.Quantile(50))/float64(off.Quantile(50)),
			float64(held.Quantile(99))/float64(off.Quantile(99)))})
	return nil
}

// Modes of eventsRun.
const (
	eventsOff  = iota // no EVENT_WEBHOOK_URL
	eventsOn          // webhooks to the receiver, deliveries awaited
	eventsHeld        // webhooks to the receiver, which holds every request
)

// eventsRun starts a broker child in mode, posts first-install callbacks
// to it until the window or the callbacks run out, waits for the measured
// events' deliveries (eventsOn) and stops the child. It also reports the
// CPU the broker, Postgres and the bench process spent meanwhile.
func (r *runner) eventsRun(ctx context.Context, cfg loadgen.Config, mode int, recv *eventReceiver, cbs []harness.Callback) (res loadgen.Result, d deliveries, err error) {
	var extra map[string]string
	if mode != eventsOff {
		extra = map[string]string{"EVENT_WEBHOOK_URL": recv.url, "EVENT_WEBHOOK_SECRET": recv.secret}
	}
	recv.setHold(mode == eventsHeld)
	defer recv.setHold(false) // before the child stops, so its deliveries end at once
	child, err := r.startBroker(ctx, extra, "serve", "--migrate=false")
	if err != nil {
		return res, d, err
	}
	defer func() { err = errors.Join(err, stopChild(child)) }()
	if _, err := child.WaitReady(ctx); err != nil {
		return res, d, err
	}
	before := sampleCPU(child.PID)
	res, committed, err := r.eventCallbacks(ctx, cfg, child, cbs)
	if err != nil {
		return res, d, err
	}
	if mode == eventsOn {
		if d, err = recv.wait(ctx, committed, eventsDrain); err == nil && d.delivered < d.measured {
			err = fmt.Errorf("events: %d of %d measured events delivered within %v; the broker's log ends:\n%s",
				d.delivered, d.measured, eventsDrain, child.LogTail(20))
		}
	}
	used := sampleCPU(child.PID).since(before)
	calls := float64(res.Ops) // measured calls; the warm-up's share of the CPU is spread over them
	r.report.detail("Events", "%s: CPU per measured callback%s: broker %s, Postgres %s, bench process %s",
		[]string{"off", "on", "on, deliveries held"}[mode], map[bool]string{true: " (load and delivery drain)", false: ""}[mode == eventsOn],
		us(time.Duration(float64(used.broker)/calls)), us(time.Duration(float64(used.postgres)/calls)),
		us(time.Duration(float64(used.bench)/calls)))
	return res, d, err
}

// cpuSample is CPU time so far of the broker child, every postgres
// process, and this process.
type cpuSample struct {
	broker, bench time.Duration
	postgres      map[int]time.Duration
}

type cpuUsed struct{ broker, postgres, bench time.Duration }

func sampleCPU(brokerPID int) cpuSample {
	s := cpuSample{postgres: map[int]time.Duration{}}
	s.broker, _ = harness.CPUTime(brokerPID)
	s.bench, _ = harness.CPUTime(os.Getpid())
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
			s.postgres[pid], _ = harness.CPUTime(pid)
		}
	}
	return s
}

// since: what was spent from s0 to s; a postgres process that ended
// meanwhile is not counted, one that began counts from zero.
func (s cpuSample) since(s0 cpuSample) cpuUsed {
	u := cpuUsed{broker: s.broker - s0.broker, bench: s.bench - s0.bench}
	for pid, t := range s.postgres {
		u.postgres += t - s0.postgres[pid]
	}
	return u
}

func (r *runner) eventCallbacks(ctx context.Context, cfg loadgen.Config, child *harness.Child, cbs []harness.Callback) (loadgen.Result, map[string]time.Time, error) {
	client := loadgen.HTTP1Client(eventsConns)
	measureFrom := time.Now().Add(cfg.Warmup)
	var mu sync.Mutex
	committed := map[string]time.Time{}
	next := new(atomic.Int64)
	res, err := loadgen.Run(ctx, cfg, func(ctx context.Context, _ int) error {
		i := next.Add(1) - 1
		if i >= int64(len(cbs)) {
			return loadgen.ErrStop
		}
		start := time.Now()
		if err := cbs[i].PostInstalled(ctx, client, child.PublicURL()); err != nil {
			return err
		}
		if !start.Before(measureFrom) {
			mu.Lock()
			committed[cbs[i].AccountID] = time.Now()
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return res, nil, err
	}
	if res.Errors > 0 {
		return res, nil, fmt.Errorf("callbacks failed under load: %v", res.FirstError)
	}
	if next.Load() >= int64(len(cbs)) {
		r.report.detail("Events", "the pre-signed callbacks ran out before the time bound: the count bound ended the run")
	}
	return res, committed, nil
}

// eventReceiver is the webhook receiver: it verifies every signature with
// the Go client's verifier and records each event's first 2xx.
type eventReceiver struct {
	url, secret string
	srv         *http.Server
	ln          net.Listener

	// hold, while open, makes every request wait for it (or for the
	// broker's 10 s time-out) and fail: deliveries stall, and a run then
	// measures the callbacks' write path with no delivery work beside it.
	hold chan struct{}

	mu         sync.Mutex
	arrived    map[string]time.Time // account -> first delivery
	requests   int
	unverified int
	changed    chan struct{} // closed and replaced on each arrival
}

func startEventReceiver() (*eventReceiver, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &eventReceiver{secret: "whsec_" + base64.StdEncoding.EncodeToString(key), ln: ln,
		url: "http://" + ln.Addr().String() + "/irisx-events", arrived: map[string]time.Time{}, changed: make(chan struct{})}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = rc.srv.Serve(ln) }()
	return rc, nil
}

func (rc *eventReceiver) serve(w http.ResponseWriter, req *http.Request) {
	rc.mu.Lock()
	hold := rc.hold
	rc.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done():
		}
		http.Error(w, "held", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	at := time.Now()
	var ev client.Event
	if err == nil {
		ev, err = client.VerifyWebhook(rc.secret, req.Header, body)
	}
	rc.mu.Lock()
	rc.requests++
	if err != nil {
		rc.unverified++
	} else if _, seen := rc.arrived[ev.AccountID]; !seen {
		rc.arrived[ev.AccountID] = at
		close(rc.changed)
		rc.changed = make(chan struct{})
	}
	rc.mu.Unlock()
	if err != nil {
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setHold starts (true) or ends holding requests.
func (rc *eventReceiver) setHold(on bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case on && rc.hold == nil:
		rc.hold = make(chan struct{})
	case !on && rc.hold != nil:
		close(rc.hold)
		rc.hold = nil
	}
}

func (rc *eventReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.srv.Shutdown(ctx)
}

// deliveries is what the receiver saw of the measured events.
type deliveries struct {
	measured, delivered, requests, unverified int
	// span: from the first measured commit to the last delivery.
	span time.Duration
	// lat: commit (the callback's 200) to first delivery; a delivery that
	// arrived before the 200 reached the client counts as 0.
	lat *hdrhistogram.Histogram
}

// wait waits until every measured account's event arrived (or limit
// passed) and summarises the deliveries.
func (rc *eventReceiver) wait(ctx context.Context, measured map[string]time.Time, limit time.Duration) (deliveries, error) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		rc.mu.Lock()
		missing := 0
		for acct := range measured {
			if _, ok := rc.arrived[acct]; !ok {
				missing++
			}
		}
		changed := rc.changed
		rc.mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return deliveries{}, ctx.Err()
		case <-deadline.C:
			return rc.summarise(measured), nil
		case <-changed:
		}
	}
	return rc.summarise(measured), nil
}

func (rc *eventReceiver) summarise(measured map[string]time.Time) deliveries {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	d := deliveries{measured: len(measured), requests: rc.requests, unverified: rc.unverified,
		lat: hdrhistogram.New(int64(time.Microsecond), int64(time.Minute), 3)}
	var first, last time.Time
	for acct, committed := range measured {
		if first.IsZero() || committed.Before(first) {
			first = committed
		}
		at, ok := rc.arrived[acct]
		if !ok {
			continue
		}
		d.delivered++
		if at.After(last) {
			last = at
		}
		_ = d.lat.RecordValue(max(int64(at.Sub(committed)), int64(time.Microsecond)))
	}
	d.span = last.Sub(first)
	return d
}

// eventsMethod says how the events phase measures, for BENCHMARKS.md.
func eventsMethod(sc scale) string {
	return fmt.Sprintf("Events: %d concurrent signed INSTALLED callbacks, each a first install of a new account "+
		"(pre-signed, RS256), %v warm-up then %v measured, bounded by %d callbacks per run. On: a broker child started "+
		"with EVENT_WEBHOOK_URL pointing at a receiver in the bench process (loopback), which verifies every "+
		"signature with `client.VerifyWebhook` and answers 204. Off: the same load against the primary broker, "+
		"started without EVENT_WEBHOOK_URL: the contract has no switch that stops events being written, so off still "+
		"writes each event row, but inserts no River job and delivers nothing. Commit time is when the callback's 200 "+
		"reached the load generator; events/s is the measured window's events divided by the time from its first 200 "+
		"to its last delivery (so a delivery backlog lowers it); commit to delivery is per event, the 200 to the "+
		"receiver's first 2xx answer. A third run, held, has the webhook configured but the receiver holds every "+
		"request (the broker's 10 s attempt time-out, then 503), so the callbacks pay the event row and River's "+
		"InsertTx with next to no delivery work beside them: it separates the write path's cost from the CPU that "+
		"deliveries take from the callbacks on this shared machine. CPU per callback is utime+stime of the broker, of "+
		"every postgres process and of the bench process over the run (warm-up included, and for on the delivery "+
		"drain), divided by the measured callbacks.", eventsConns, sc.warmup/2, sc.measure, sc.eventsCallbacks)
}
