package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
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
	jsonOp := func(url string) loadgen.Op { return getTokenLoad(conns, url, body) }
	base, err := loadgen.Run(ctx, cfg, jsonOp(baseURL))
	if err != nil {
		return err
	}
	r.report.result(area, "bare Echo in the bench process, same response bytes", base)

	grpcClients := r.sc.grpcConns()
	grpcOp := func(url string) loadgen.Op {
		clients := make([]brokerv1connect.TokenServiceClient, grpcClients)
		for i := range clients {
			clients[i] = harness.TokenClient(loadgen.H2CClient(), url, connect.WithGRPC())
		}
		return func(ctx context.Context, w int) error {
			_, err := harness.GetToken(ctx, clients[w%len(clients)], harness.App, cb.AccountID)
			return err
		}
	}
	// The same bare server as a process of its own, like the broker: two
	// Go runtimes sharing the CPUs cost something by themselves, and only a
	// process of its own has a CPU time to compare the broker's with. It,
	// the broker over Connect-JSON and the broker over gRPC take turns.
	answerFile := filepath.Join(r.tmp, "answer.json")
	if err := os.WriteFile(answerFile, first.Raw, 0o600); err != nil {
		return err
	}
	echoURL, echoPID, stopEcho, err := r.startOwnBaseline(ctx, r.echoBinary, answerFile)
	if err != nil {
		return err
	}
	defer stopEcho()
	// And a bare grpc-go server answering the same message in protobuf: what
	// a gRPC call costs a server here before any of the broker's work.
	answerProto, err := protoAnswer(first.Raw)
	if err != nil {
		return err
	}
	protoFile := filepath.Join(r.tmp, "answer.pb")
	if err := os.WriteFile(protoFile, answerProto, 0o600); err != nil {
		return err
	}
	bareGRPCURL, bareGRPCPID, stopGRPC, err := r.startOwnBaseline(ctx, r.grpcBinary, protoFile)
	if err != nil {
		return err
	}
	defer stopGRPC()
	runs, err := runInterleaved(ctx, cfg, cpuRounds, []cpuLoad{
		{jsonOp(echoURL), []int{echoPID, os.Getpid()}},
		{jsonOp(child.InternalURL()), []int{child.PID, os.Getpid()}},
		{grpcOp(child.InternalURL()), []int{child.PID, os.Getpid()}},
		{grpcOp(bareGRPCURL), []int{bareGRPCPID, os.Getpid()}},
	})
	stopEcho()
	stopGRPC()
	if err != nil {
		return err
	}
	own, svc, grpc, bareGRPC := runs[0], runs[1], runs[2], runs[3]
	r.report.resultCPU(area, "bare Echo in its own process, same response bytes", own, "server", "bench process (client)")
	r.report.resultCPU(area, "broker, Connect-JSON GetToken", svc, "server", "bench process (client)")
	r.report.resultCPU(area, fmt.Sprintf("broker, gRPC GetToken (h2c, %d connections)", grpcClients), grpc,
		"server", "bench process (client)")
	r.report.resultCPU(area, fmt.Sprintf("bare grpc-go server in its own process, same answer in protobuf (h2c, %d connections)", grpcClients),
		bareGRPC, "server", "bench process (client)")
	missed := svc.perRequest(0) > time.Duration(tokenCPUTarget*float64(own.perRequest(0))) ||
		grpc.perRequest(0) > svc.perRequest(0)
	if r.profiles(missed) {
		if err := r.profileInProcess(ctx, area+" (Connect-JSON GetToken)", cfg,
			func(s service) (loadgen.Op, error) { return jsonOp(s.InternalURL), nil }); err != nil {
			return fmt.Errorf("profiling: %w", err)
		}
	}

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
	// Under callgrind one worker sends every call, on grpcOp's first client.
	ic, err := r.instructionFigures(ctx, answerFile, jsonOp, grpcOp)
	if err != nil {
		return err
	}

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
	r.report.add(Figure{Area: area, Name: "server CPU per cached GetToken, bare grpc-go server (no broker work) vs the broker's Connect-JSON",
		Value: us(bareGRPC.perRequest(0)), Baseline: us(svcCPU) + " (broker, Connect-JSON)",
		Ratio: cpuRatio(bareGRPC.perRequest(0), svcCPU)})
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
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("throughput, gRPC (h2c, %d conns), %d concurrent calls", grpcClients, conns),
		Value: perSecond(grpc), Baseline: perSecond(svc) + " (Connect-JSON)",
		Ratio: fmt.Sprintf("%.2f", grpc.Throughput()/svc.Throughput()), Pass: nil})
	r.report.add(Figure{Area: area, Name: "throughput, Connect-JSON, LOG_LEVEL=warn (no request log)",
		Value: perSecond(noLog), Baseline: perSecond(base) + " (bare Echo)",
		Ratio: fmt.Sprintf("%.2f", noLog.Throughput()/base.Throughput())})
	r.tokenNotes(own, svc, grpc, bareGRPC, noLog, ic)
	if svc.Errors+grpc.Errors+bareGRPC.Errors+noLog.Errors > 0 {
		return fmt.Errorf("GetToken failed under load: %v / %v / %v / %v", svc.FirstError, grpc.FirstError, bareGRPC.FirstError, noLog.FirstError)
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

// startOwnBaseline starts a bare baseline server (bench/echobaseline or
// bench/grpcbaseline: binary ADDR FILE) as a process of its own, answering
// the bytes in answerFile.
func (r *runner) startOwnBaseline(ctx context.Context, binary, answerFile string) (url string, pid int, stop func(), err error) {
	addr, err := harness.FreePort()
	if err != nil {
		return "", 0, nil, err
	}
	srv, err := harness.StartServer(ctx, binary, []string{addr, answerFile}, addr, filepath.Join(r.tmp, filepath.Base(binary)+".log"))
	if err != nil {
		return "", 0, nil, err
	}
	var once sync.Once
	return "http://" + addr, srv.PID, func() { once.Do(func() { _ = srv.Kill() }) }, nil // no state, no graceful stop to test
}

// getTokenOK calls GetToken over Connect-JSON with body; an answer other
// than 200 is an error.
func getTokenOK(ctx context.Context, client *http.Client, url string, body []byte) error {
	a, err := harness.GetTokenJSON(ctx, client, url, body)
	if err == nil && a.HTTPStatus != http.StatusOK {
		err = fmt.Errorf("GetToken answered %d %s", a.HTTPStatus, a.Code)
	}
	return err
}

// getTokenLoad is a load of getTokenOK calls with body to url, on conns
// keep-alive connections.
func getTokenLoad(conns int, url string, body []byte) loadgen.Op {
	client := loadgen.HTTP1Client(conns)
	return func(ctx context.Context, _ int) error { return getTokenOK(ctx, client, url, body) }
}

// protoAnswer is a Connect-JSON GetToken answer in protobuf.
func protoAnswer(jsonAnswer []byte) ([]byte, error) {
	var m brokerv1.GetTokenResponse
	if err := protojson.Unmarshal(jsonAnswer, &m); err != nil {
		return nil, fmt.Errorf("the GetToken answer: %w", err)
	}
	return proto.Marshal(&m)
}

// cpuRounds is how many turns each load of the CPU comparison takes.
const cpuRounds = 5

// instructionFigures adds the callgrind rows: instructions per request of
// the bare Echo server and of the broker over Connect-JSON and gRPC, one
// request at a time. Without valgrind the rows say not measured.
func (r *runner) instructionFigures(ctx context.Context, answerFile string, jsonOp, grpcOp func(url string) loadgen.Op) (*instructionCounts, error) {
	const area = "Cached token"
	jsonName := "user-space instructions per cached GetToken (callgrind, one request at a time), Connect-JSON vs bare Echo"
	grpcName := "user-space instructions per cached GetToken (callgrind, one request at a time), gRPC vs Connect-JSON"
	if _, _, ok := valgrindPath(); !ok {
		r.report.add(Figure{Area: area, Name: jsonName, Value: "not measured (no valgrind)"})
		r.report.add(Figure{Area: area, Name: grpcName, Value: "not measured (no valgrind)"})
		return nil, nil
	}
	n := r.sc.callgrindRequests
	ic, err := r.countInstructions(ctx, n, answerFile, jsonOp, grpcOp)
	if err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name string
		c    callgrindCount
	}{{"bare Echo", ic.echo}, {"broker, Connect-JSON", ic.json}, {"broker, gRPC", ic.grpc}} {
		r.report.detail(area, "callgrind, %s: %d sequential requests on one connection after %d uncounted: %.0f instructions per request "+
			"(%.0f counted, less the idle rate of %.0f per second over the window)", c.name, n, callgrindWarmup, c.c.PerRequest, c.c.Raw, c.c.IdlePerSecond)
	}
	e, j, g := ic.echo.PerRequest, ic.json.PerRequest, ic.grpc.PerRequest
	// No target: callgrind counts user-space instructions only, while most
	// of a bare server's CPU is the kernel's (read, write, epoll), so the
	// ratio is not the CPU ratio; it shows the broker's own code, free of
	// the machine's noise.
	r.report.add(Figure{Area: area, Name: jsonName, Value: kinstr(j), Baseline: kinstr(e) + " (bare Echo)",
		Ratio: fmt.Sprintf("%.2f", j/e)})
	r.report.add(Figure{Area: area, Name: grpcName, Value: kinstr(g), Baseline: kinstr(j) + " (Connect-JSON)",
		Ratio: fmt.Sprintf("%.2f", g/j)})
	return &ic, nil
}

// tokenNotes explains the cached-token figures with this run's numbers.
func (r *runner) tokenNotes(own, svc, grpc, bareGRPC, noLog cpuResult, ic *instructionCounts) {
	const area = "Cached token"
	e, j, g, q, b := own.perRequest(0), svc.perRequest(0), grpc.perRequest(0), noLog.perRequest(0), bareGRPC.perRequest(0)
	r.report.note(area, "**Connect-JSON vs bare Echo.** The broker spent %s of server CPU per cached GetToken against %s "+
		"for the bare Echo server answering the same bytes (%.2f×, target %.1f×), the loads taking %d turns of %v each so that "+
		"the machine's other load fell on all alike. A broker started with LOG_LEVEL=warn (no request log line) spent %s: "+
		"the log line is about %s of the difference (measured in a run of its own, so only roughly).",
		us(j), us(e), float64(j)/float64(max(e, 1)), tokenCPUTarget, cpuRounds, r.sc.measure/cpuRounds, us(q), us(j-q))
	r.report.note(area, "**gRPC vs Connect-JSON.** gRPC (h2c, %d calls on %d connections) cost %s per call against %s for "+
		"Connect-JSON over HTTP/1.1 (%.2f×, target ≤ 1×); the client (the bench process) spent %s against %s. A bare grpc-go "+
		"server answering the same message with no work at all, loaded the same way in the same turns, spent %s per call "+
		"(%.2f× the broker's whole Connect-JSON call) before any of the broker's work: what the HTTP/2 and gRPC framing "+
		"alone cost a server here (see the analysis below).",
		r.sc.tokenConns, r.sc.grpcConns(), us(g), us(j), float64(g)/float64(max(j, 1)), us(grpc.perRequest(1)), us(svc.perRequest(1)),
		us(b), float64(b)/float64(max(j, 1)))
	if ic == nil {
		return
	}
	r.report.note(area, "**Instructions (callgrind).** One request at a time, the bare Echo server executed %s per request, "+
		"the broker %s over Connect-JSON (%.2f×) and %s over gRPC (%.2f× Connect-JSON). These are user-space instructions "+
		"only: the kernel's share (read, write, epoll), most of a bare server's CPU, is not counted, so this ratio is higher "+
		"than the CPU ratio; the %s the broker executes beyond bare Echo is its own work: the bearer check, the GetToken "+
		"short path, the token lookup, the log line and the metrics.",
		kinstr(ic.echo.PerRequest), kinstr(ic.json.PerRequest), ic.json.PerRequest/ic.echo.PerRequest,
		kinstr(ic.grpc.PerRequest), ic.grpc.PerRequest/ic.json.PerRequest, kinstr(ic.json.PerRequest-ic.echo.PerRequest))
}

func kinstr(n float64) string { return fmt.Sprintf("%.1f k instructions", n/1e3) }

func perSecond(res interface{ Throughput() float64 }) string {
	return fmt.Sprintf("%.0f/s", res.Throughput())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
