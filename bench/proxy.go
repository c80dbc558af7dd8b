package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Targets of the IRIS API proxy.
const (
	proxyCPUTarget      = 1.3                    // server CPU per request, broker / bare proxy
	proxyAddedP50Target = 300 * time.Microsecond // broker p50 - bare proxy p50
)

// proxyAsset is the small JSON document the loopback stand-in answers.
var proxyAsset = []byte(`{"data":{"id":"8d3f0a52-6f0b-4c5e-9a1e-2b7c4d5e6f70","name":"Excavator 7","brand":"CAT",` +
	`"model":"320","serialNumber":"CAT0320XYZ","location":{"lat":55.6761,"lon":12.5683},"operatingHours":1234.5}}` + "\n")

// proxyBaselineToken is the bare proxy's fixed bearer token.
const proxyBaselineToken = "bench-fixed-access-token-0123456789abcdef"

// proxyPhase measures a proxied GET of a small JSON document, 64
// connections, through the broker's IRIS API proxy against a bare
// httputil.ReverseProxy in its own process doing the same forwarding with a
// fixed token: throughput, server CPU per request and added p50 latency.
func (r *runner) proxyPhase(ctx context.Context) (err error) {
	const area = "IRIS proxy"
	upstream, stopUp, err := startAssetStandIn()
	if err != nil {
		return err
	}
	defer stopUp()

	child, err := r.startBroker(ctx, map[string]string{"IRIS_API_URL": upstream}, "serve", "--migrate=false")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopChild(child)) }()
	if _, err := child.WaitReady(ctx); err != nil {
		return err
	}
	cb, err := harness.NewCallback(r.sim.Sim, harness.App, true)
	if err != nil {
		return err
	}
	setup := loadgen.HTTP1Client(1)
	if err := cb.PostInstalled(ctx, setup, child.PublicURL()); err != nil {
		return err
	}
	path := "/iris/accounts/" + cb.AccountID + "/api/assets/8d3f0a52?fields=all"
	if err := proxyGet(ctx, setup, child.InternalURL()+path); err != nil {
		return fmt.Errorf("first proxied GET: %w", err)
	}

	bin, err := harness.Build(ctx, r.tmp, "./bench/proxybaseline")
	if err != nil {
		return err
	}
	addr, err := harness.FreePort()
	if err != nil {
		return err
	}
	bare, err := harness.StartServer(ctx, bin, []string{addr, upstream, proxyBaselineToken}, addr, filepath.Join(r.tmp, "proxybaseline.log"))
	if err != nil {
		return err
	}
	defer func() { _ = bare.Kill() }()

	conns := r.sc.tokenConns
	measure := func(url string, pid int) (loadgen.Result, time.Duration, error) {
		client := loadgen.HTTP1Client(conns)
		op := func(ctx context.Context, _ int) error { return proxyGet(ctx, client, url) }
		if _, err := loadgen.Run(ctx, loadgen.Config{Workers: conns, Duration: r.sc.warmup}, op); err != nil {
			return loadgen.Result{}, 0, err
		}
		before, err := harness.CPUTime(pid)
		if err != nil {
			return loadgen.Result{}, 0, err
		}
		res, err := loadgen.Run(ctx, loadgen.Config{Workers: conns, Duration: r.sc.measure}, op)
		if err != nil {
			return res, 0, err
		}
		after, err := harness.CPUTime(pid)
		if n := res.Ops + res.Errors; n > 0 && err == nil {
			return res, (after - before) / time.Duration(n), nil
		}
		return res, 0, err
	}

	direct, _, err := measure(upstream+"/api/assets/8d3f0a52?fields=all", os.Getpid())
	if err != nil {
		return err
	}
	r.report.result(area, "the loopback stand-in, called directly", direct)
	base, baseCPU, err := measure("http://"+addr+path, bare.PID)
	if err != nil {
		return err
	}
	r.report.result(area, "bare httputil.ReverseProxy in its own process, fixed token", base)
	svc, svcCPU, err := measure(child.InternalURL()+path, child.PID)
	if err != nil {
		return err
	}
	r.report.result(area, "broker's IRIS proxy", svc)
	r.report.detail(area, "server CPU per request (utime+stime from /proc/PID/stat over the measured window / requests): broker %v, bare proxy %v",
		svcCPU, baseCPU)

	quiet, err := r.startBroker(ctx, map[string]string{"IRIS_API_URL": upstream, "LOG_LEVEL": "warn"}, "serve", "--migrate=false")
	if err != nil {
		return err
	}
	if _, err := quiet.WaitReady(ctx); err != nil {
		return errors.Join(err, stopChild(quiet))
	}
	noLog, noLogCPU, err := measure(quiet.InternalURL()+path, quiet.PID)
	if err = errors.Join(err, stopChild(quiet)); err != nil {
		return err
	}
	r.report.result(area, "broker's IRIS proxy, LOG_LEVEL=warn", noLog)

	cpuRatio := float64(svcCPU) / float64(max(baseCPU, 1))
	added := svc.Quantile(50) - base.Quantile(50)
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("throughput, proxied GET of a small JSON document, %d conns", conns),
		Value: perSecond(svc), Baseline: perSecond(base) + " (bare ReverseProxy, own process)",
		Ratio: fmt.Sprintf("%.2f", svc.Throughput()/base.Throughput())})
	r.report.add(Figure{Area: area, Name: "proxied GET, added server CPU vs httputil.ReverseProxy",
		Value: fmt.Sprintf("%s (%+.1f µs)", us(svcCPU), float64(svcCPU-baseCPU)/1e3), Baseline: us(baseCPU) + " (bare ReverseProxy, own process)",
		Ratio: fmt.Sprintf("%.2f", cpuRatio), Target: fmt.Sprintf("≤ %.1f", proxyCPUTarget),
		Pass: pass(cpuRatio <= proxyCPUTarget && svc.Errors == 0)})
	r.report.add(Figure{Area: area, Name: "p50 latency added over the bare proxy",
		Value:    ms(added),
		Baseline: fmt.Sprintf("p50 %s broker, %s bare proxy, %s direct", ms(svc.Quantile(50)), ms(base.Quantile(50)), ms(direct.Quantile(50))),
		Target:   "≤ " + ms(proxyAddedP50Target), Pass: pass(added <= proxyAddedP50Target)})
	r.report.add(Figure{Area: area, Name: "server CPU per proxied request, LOG_LEVEL=warn (no request log)",
		Value: us(noLogCPU), Baseline: us(baseCPU) + " (bare ReverseProxy)",
		Ratio: fmt.Sprintf("%.2f", float64(noLogCPU)/float64(max(baseCPU, 1)))})
	r.report.Method = append(r.report.Method, fmt.Sprintf("IRIS proxy: `GET /iris/accounts/{id}/api/assets/…?fields=all` "+
		"through the broker (its cached install token, LOG_LEVEL=info) to a loopback stand-in in the bench process "+
		"answering a %d-byte JSON document, %d connections, against `bench/proxybaseline` (a bare "+
		"`httputil.ReverseProxy`, its own process, the same rewrite with a fixed token). Server CPU per request is "+
		"utime+stime of the server process from /proc/PID/stat across the measured window divided by its requests "+
		"(10 ms ticks; the window has thousands of requests). %v warm-up, then %v measured, for each.",
		len(proxyAsset), conns, r.sc.warmup, r.sc.measure))
	if svc.Errors+base.Errors+noLog.Errors > 0 {
		return fmt.Errorf("proxied GETs failed under load: %v / %v / %v", svc.FirstError, base.FirstError, noLog.FirstError)
	}
	return nil
}

// proxyGet fetches url and checks it is the stand-in's document.
func proxyGet(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+harness.InternalToken)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(proxyAsset)) {
		return fmt.Errorf("answered %d with %d bytes", resp.StatusCode, n)
	}
	return nil
}

// startAssetStandIn serves the small JSON document on loopback to any GET
// that carries a bearer token.
func startAssetStandIn() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	length := strconv.Itoa(len(proxyAsset))
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(proxyAsset)
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }
