package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Targets of the cached token path.
const (
	// tokenCPUTarget bounds the broker's server CPU per cached GetToken
	// over the bare Echo server's, each in its own process.
	tokenCPUTarget = 1.5
)

// tokenPhase measures GetToken for a cached token over Connect-JSON against
// a bare Echo handler answering the same bytes, and over gRPC.
func (r *runner) tokenPhase(ctx context.Context) error {
	const area = "Cached token"
	child := r.primary
	cb, err := harness.NewCallback(r.sim.Sim, harness.App, true)
	if err != nil {
		return err
	}
	setup := loadgen.HTTP1Client(1)
	if err := cb.PostInstalled(ctx, setup, child.PublicURL()); err != nil {
		return err
	}
	body := harness.TokenRequestBody(harness.App, cb.AccountID)
	first, err := harness.GetTokenJSON(ctx, setup, child.InternalURL(), body)
	if err != nil || first.HTTPStatus != http.StatusOK {
		return fmt.Errorf("first GetToken: %d %s: %v", first.HTTPStatus, first.Code, err)
	}

	baseURL, stopBase, err := startBaseline(first.Raw)
	if err != nil {
		return err
	}
	defer stopBase()

	conns := r.sc.tokenConns
	cfg := loadgen.Config{Workers: conns, Warmup: r.sc.warmup, Duration: r.sc.measure}
	jsonOp := func(url string) loadgen.Op {
		client := loadgen.HTTP1Client(conns)
		return func(ctx context.Context, _ int) error {
			a, err := harness.GetTokenJSON(ctx, client, url, body)
			if err == nil && a.HTTPStatus != http.StatusOK {
				err = fmt.Errorf("GetToken answered %d %s", a.HTTPStatus, a.Code)
			}
			return err
		}
	}
	base, err := loadgen.Run(ctx, cfg, jsonOp(baseURL))
	if err != nil {
		return err
	}
	r.report.result(area, "bare Echo in the bench process, same response bytes", base)
	// The same bare server as a process of its own, like the broker: two
	// Go runtimes sharing the CPUs cost something by themselves, and only a
	// process of its own has a CPU time to compare the broker's with.
	own, err := r.ownProcessBaseline(ctx, cfg, first.Raw, jsonOp)
	if err != nil {
		return err
	}
	r.report.resultCPU(area, "bare Echo in its own process, same response bytes", own, "server", "bench process (client)")
	svc, err := r.runProfiled(ctx, area+" (Connect-JSON GetToken)", child, cfg,
		func(s service) (loadgen.Op, error) { return jsonOp(s.InternalURL), nil },
		func(res cpuResult) bool {
			return res.perRequest(0) <= time.Duration(tokenCPUTarget*float64(own.perRequest(0)))
		})
	if err != nil {
		return err
	}
	r.report.resultCPU(area, "broker, Connect-JSON GetToken", svc, "server", "bench process (client)")

	// gRPC clients multiplex calls on one HTTP/2 connection; eight calls
	// per connection keeps one connection's framing from being the limit.
	grpcClients := make([]brokerv1connect.TokenServiceClient, max(1, conns/8))
	for i := range grpcClients {
		grpcClients[i] = harness.TokenClient(loadgen.H2CClient(), child.InternalURL(), connect.WithGRPC())
	}
	grpc, err := runCPU(ctx, cfg, func(ctx context.Context, w int) error {
		_, err := harness.GetToken(ctx, grpcClients[w%len(grpcClients)], harness.App, cb.AccountID)
		return err
	}, child.PID, os.Getpid())
	if err != nil {
		return err
	}
	r.report.resultCPU(area, fmt.Sprintf("broker, gRPC GetToken (h2c, %d connections)", len(grpcClients)), grpc,
		"server", "bench process (client)")

	// The same load against a broker that does not log every request, to
	// show what the per-request log line costs.
	quiet, err := r.startBroker(ctx, map[string]string{"LOG_LEVEL": "warn"}, "serve", "--migrate=false")
	if err != nil {
		return err
	}
	if _, err := quiet.WaitReady(ctx); err != nil {
		return errors.Join(err, stopChild(quiet))
	}
	noLog, err := runCPU(ctx, cfg, jsonOp(quiet.InternalURL()), quiet.PID)
	if err = errors.Join(err, stopChild(quiet)); err != nil {
		return err
	}
	r.report.resultCPU(area, "broker with LOG_LEVEL=warn, Connect-JSON GetToken", noLog, "server")

	svcCPU, echoCPU, grpcCPU := svc.perRequest(0), own.perRequest(0), grpc.perRequest(0)
	jsonVsEcho := float64(svcCPU) / float64(max(echoCPU, 1))
	grpcVsJSON := float64(grpcCPU) / float64(max(svcCPU, 1))
	r.report.add(Figure{Area: area, Name: "server CPU per cached GetToken, Connect-JSON vs bare Echo",
		Value: us(svcCPU), Baseline: us(echoCPU) + " (bare Echo, own process)",
		Ratio: fmt.Sprintf("%.2f", jsonVsEcho), Target: fmt.Sprintf("≤ %.1f", tokenCPUTarget),
		Pass: pass(jsonVsEcho <= tokenCPUTarget && svc.Errors == 0)})
	r.report.add(Figure{Area: area, Name: "server CPU per cached GetToken, gRPC vs Connect-JSON",
		Value: us(grpcCPU), Baseline: us(svcCPU) + " (Connect-JSON)",
		Ratio: fmt.Sprintf("%.2f", grpcVsJSON), Target: "≤ 1.0",
		Pass: pass(grpcVsJSON <= 1 && grpc.Errors == 0)})
	r.report.add(Figure{Area: area, Name: "client CPU per cached GetToken (bench process: load generator), gRPC vs Connect-JSON",
		Value: us(grpc.perRequest(1)), Baseline: us(svc.perRequest(1)) + " (Connect-JSON client)",
		Ratio: cpuRatio(grpc.perRequest(1), svc.perRequest(1))})
	r.report.add(Figure{Area: area, Name: "server CPU per cached GetToken, LOG_LEVEL=warn (no request log) vs bare Echo",
		Value: us(noLog.perRequest(0)), Baseline: us(echoCPU) + " (bare Echo, own process)",
		Ratio: cpuRatio(noLog.perRequest(0), echoCPU)})

	r.report.add(Figure{Area: area, Name: fmt.Sprintf("throughput, Connect-JSON, %d conns", conns),
		Value: perSecond(svc), Baseline: perSecond(base) + " (bare Echo)",
		Ratio: fmt.Sprintf("%.2f", svc.Throughput()/base.Throughput())})
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("throughput vs bare Echo in its own process, %d conns", conns),
		Value: perSecond(svc), Baseline: perSecond(own) + " (bare Echo, own process)",
		Ratio: fmt.Sprintf("%.2f", svc.Throughput()/own.Throughput())})
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("latency p50 / p99, %d conns (reported, not gated)", conns),
		Value: fmt.Sprintf("%s / %s", ms(svc.Quantile(50)), ms(svc.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s (bare Echo); %s / %s (own process)", ms(base.Quantile(50)), ms(base.Quantile(99)),
			ms(own.Quantile(50)), ms(own.Quantile(99))),
		Ratio: fmt.Sprintf("%.2f (p99)", float64(svc.Quantile(99))/float64(max(own.Quantile(99), 1)))})
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("throughput, gRPC (h2c, %d conns), %d concurrent calls", len(grpcClients), conns),
		Value: perSecond(grpc), Baseline: perSecond(svc) + " (Connect-JSON)",
		Ratio: fmt.Sprintf("%.2f", grpc.Throughput()/svc.Throughput()), Pass: nil})
	r.report.add(Figure{Area: area, Name: "throughput, Connect-JSON, LOG_LEVEL=warn (no request log)",
		Value: perSecond(noLog), Baseline: perSecond(base) + " (bare Echo)",
		Ratio: fmt.Sprintf("%.2f", noLog.Throughput()/base.Throughput())})
	if svc.Errors+grpc.Errors+noLog.Errors > 0 {
		return fmt.Errorf("GetToken failed under load: %v / %v / %v", svc.FirstError, grpc.FirstError, noLog.FirstError)
	}
	return nil
}

// startBaseline serves a bare Echo handler on the GetToken route that
// answers the given bytes, as the broker's handler would without any work.
func startBaseline(answer []byte) (url string, stop func(), err error) {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST(harness.GetTokenPath, func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, answer)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		_ = srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}, nil
}

// ownProcessBaseline runs the load against the bare Echo server started
// as a separate process (bench/echobaseline) answering the same bytes.
func (r *runner) ownProcessBaseline(ctx context.Context, cfg loadgen.Config, answer []byte,
	jsonOp func(url string) loadgen.Op) (cpuResult, error) {
	file := filepath.Join(r.tmp, "answer.json")
	if err := os.WriteFile(file, answer, 0o600); err != nil {
		return cpuResult{}, err
	}
	addr, err := harness.FreePort()
	if err != nil {
		return cpuResult{}, err
	}
	srv, err := harness.StartServer(ctx, r.echoBinary, []string{addr, file}, addr, filepath.Join(r.tmp, "echobaseline.log"))
	if err != nil {
		return cpuResult{}, err
	}
	res, err := runCPU(ctx, cfg, jsonOp("http://"+addr), srv.PID, os.Getpid())
	_ = srv.Kill() // it has no state and no graceful stop to test
	return res, err
}

func perSecond(res interface{ Throughput() float64 }) string {
	return fmt.Sprintf("%.0f/s", res.Throughput())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
