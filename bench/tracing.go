package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Target of the tracing cost on the cached token path (issue 14).
const tracingRatioTarget = 0.95

// tracingPhase measures cached GetToken (Connect-JSON) on a broker with
// tracing on, sampler parentbased_traceidratio 0.01 exporting over OTLP to
// a sink in the bench process, against a broker with tracing off; both are
// children on the same database, serving the same cached token, running at
// once and loaded in turns, so the machine's other load falls on both
// alike and each has a CPU time of its own per request.
func (r *runner) tracingPhase(ctx context.Context) error {
	const area = "Tracing"
	sinkURL, exports, stopSink, err := startOTLPSink()
	if err != nil {
		return err
	}
	defer stopSink()

	cb, err := harness.NewCallback(r.sim.Sim, harness.App, true)
	if err != nil {
		return err
	}
	setup := loadgen.HTTP1Client(1)
	body := harness.TokenRequestBody(harness.App, cb.AccountID)
	conns := r.sc.tokenConns
	cfg := loadgen.Config{Workers: conns, Warmup: r.sc.warmup, Duration: r.sc.measure}

	// The install is sent to the first child started: the primary broker
	// may be gone by now (the scale phase restarts it on its own data).
	var children []*harness.Child
	stopAll := func() error {
		var errs []error
		for _, c := range children {
			errs = append(errs, stopChild(c)) // stopping flushes the exporter
		}
		children = nil
		return errors.Join(errs...)
	}
	defer func() { _ = stopAll() }()
	for i, extra := range []map[string]string{nil, {
		"OTEL_EXPORTER_OTLP_ENDPOINT": sinkURL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01",
	}} {
		child, err := r.startBroker(ctx, extra, "serve", "--migrate=false")
		if err != nil {
			return err
		}
		children = append(children, child)
		if _, err := child.WaitReady(ctx); err != nil {
			return err
		}
		if i == 0 {
			if err := cb.PostInstalled(ctx, setup, child.PublicURL()); err != nil {
				return err
			}
		}
		// The first call fills this replica's cache (from the shared token).
		if a, err := harness.GetTokenJSON(ctx, setup, child.InternalURL(), body); err != nil || a.HTTPStatus != http.StatusOK {
			return fmt.Errorf("first GetToken: %d %s: %v", a.HTTPStatus, a.Code, err)
		}
	}
	offChild, onChild := children[0], children[1]
	runs, err := runInterleaved(ctx, cfg, cpuRounds, []cpuLoad{
		{getTokenLoad(conns, offChild.InternalURL(), body), []int{offChild.PID, os.Getpid()}},
		{getTokenLoad(conns, onChild.InternalURL(), body), []int{onChild.PID, os.Getpid()}},
	})
	if err = errors.Join(err, stopAll()); err != nil {
		return err
	}
	off, on := runs[0], runs[1]
	r.report.resultCPU(area, "broker, tracing off, Connect-JSON GetToken", off, "server", "bench process (client)")
	r.report.resultCPU(area, "broker, tracing on (OTLP, parentbased_traceidratio 0.01), Connect-JSON GetToken", on,
		"server", "bench process (client)")
	r.report.detail(area, "the OTLP sink received %d export requests from the traced broker", exports.Load())

	ratio := on.Throughput() / off.Throughput()
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("cached GetToken, tracing on (parentbased_traceidratio 0.01) vs off, %d conns", conns),
		Value: perSecond(on), Baseline: perSecond(off) + " (tracing off)",
		Ratio: fmt.Sprintf("%.2f", ratio), Target: fmt.Sprintf("≥ %.2f", tracingRatioTarget),
		Pass: pass(ratio >= tracingRatioTarget && on.Errors == 0 && exports.Load() > 0)})
	r.report.add(Figure{Area: area, Name: "server CPU per cached GetToken, tracing on (parentbased_traceidratio 0.01) vs off",
		Value: us(on.perRequest(0)), Baseline: us(off.perRequest(0)) + " (tracing off)",
		Ratio: cpuRatio(on.perRequest(0), off.perRequest(0))})
	if on.Errors+off.Errors > 0 {
		return fmt.Errorf("GetToken failed under load: %v / %v", off.FirstError, on.FirstError)
	}
	return nil
}

// startOTLPSink accepts OTLP/HTTP exports and discards them, counting.
func startOTLPSink() (url string, exports *atomic.Int64, stop func(), err error) {
	exports = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" {
			exports.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), exports, func() { _ = srv.Close() }, nil
}
