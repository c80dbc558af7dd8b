package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Targets of the install ingest.
const (
	ingestRatioTarget = 0.5
	ingestRateTarget  = 1000.0
)

// Sizes of the sealed credentials the broker stores: a 20-byte Okta client
// id and a 40-byte secret, each plus a 12-byte nonce and a 16-byte tag.
const (
	clientIDEncSize     = 20 + 28
	clientSecretEncSize = 40 + 28
)

// rawApp is the app of the baseline's rows, apart from the broker's.
const rawApp = "@irisx/bench-raw"

const (
	rawInstallSQL = `INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc,
			client_secret_enc, credentials_version, installed_at, updated_at, last_event_at)
		VALUES ($1, $2, 'installed', $3, $4, $5, 1, $6, $6, $6)
		ON CONFLICT (iris_app_id, account_id) DO NOTHING`
	// rawInstallEventSQL writes the event-log row in the same statement,
	// as the broker's first INSTALLED does.
	rawInstallEventSQL = `WITH ins AS (
			INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc,
				client_secret_enc, credentials_version, installed_at, updated_at, last_event_at)
			VALUES ($1, $2, 'installed', $3, $4, $5, 1, $6, $6, $6)
			ON CONFLICT (iris_app_id, account_id) DO NOTHING
			RETURNING iris_app_id, account_id)
		INSERT INTO install_events (iris_app_id, account_id, type, outcome, event_at, received_at, jti, remote_addr)
		SELECT iris_app_id, account_id, 'INSTALLED', 'installed', $6, $6, $7, '127.0.0.1' FROM ins`
)

// ingestPhase measures signed install callbacks, each for a new account,
// against raw inserts of the same row at the same concurrency.
func (r *runner) ingestPhase(ctx context.Context) error {
	const area = "Install ingest"
	began := time.Now()
	cbs, err := harness.Presign(ctx, r.sim.Sim, harness.App, r.sc.ingestCallbacks, runtime.NumCPU(), false)
	if err != nil {
		return err
	}
	r.report.detail(area, "pre-signed %d callbacks (RS256, each a new account) in %v",
		len(cbs), time.Since(began).Round(time.Millisecond))

	conns := r.sc.ingestConns
	cfg := loadgen.Config{Workers: conns, Warmup: r.sc.warmup / 2, Duration: r.sc.measure}
	pcfg, err := pgxpool.ParseConfig(r.dbURL)
	if err != nil {
		return err
	}
	pcfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	keyID := r.keyID()
	rawOp := func(sql string) loadgen.Op {
		return func(ctx context.Context, _ int) error {
			args := []any{rawApp, uuid.NewString(), keyID, randomBytes(clientIDEncSize), randomBytes(clientSecretEncSize), time.Now()}
			if sql == rawInstallEventSQL {
				args = append(args, base64.RawURLEncoding.EncodeToString(randomBytes(16)))
			}
			tag, err := pool.Exec(ctx, sql, args...)
			if err == nil && tag.RowsAffected() != 1 {
				err = fmt.Errorf("raw insert affected %d rows", tag.RowsAffected())
			}
			return err
		}
	}
	base, err := loadgen.Run(ctx, cfg, rawOp(rawInstallSQL))
	if err != nil {
		return err
	}
	r.report.result(area, "raw pgx INSERT ... ON CONFLICT (installs row)", base)
	baseEvent, err := loadgen.Run(ctx, cfg, rawOp(rawInstallEventSQL))
	if err != nil {
		return err
	}
	r.report.result(area, "raw pgx INSERT ... ON CONFLICT (installs + event row, one statement)", baseEvent)

	var childUsed *atomic.Int64 // how many callbacks the child's run took
	mkOp := func(s service) (loadgen.Op, error) {
		batch := cbs
		if childUsed != nil { // the profiled rerun: a fresh batch of new accounts
			var err error
			if batch, err = harness.Presign(ctx, r.sim.Sim, harness.App, len(cbs), runtime.NumCPU(), false); err != nil {
				return nil, err
			}
		}
		next := new(atomic.Int64)
		if childUsed == nil {
			childUsed = next
		}
		client := loadgen.HTTP1Client(conns)
		return func(ctx context.Context, _ int) error {
			i := next.Add(1) - 1
			if i >= int64(len(batch)) {
				return loadgen.ErrStop
			}
			return batch[i].PostInstalled(ctx, client, s.PublicURL)
		}, nil
	}
	svc, err := r.runProfiled(ctx, area+" (signed callbacks)", r.primary, cfg, mkOp, func(res cpuResult) bool {
		return res.Throughput() >= ingestRateTarget && res.Throughput() >= ingestRatioTarget*base.Throughput()
	})
	if err != nil {
		return err
	}
	r.report.resultCPU(area, "broker, signed callbacks (verify, seal, commit)", svc, "server", "bench process (client)")
	if svc.Errors > 0 {
		return fmt.Errorf("callbacks failed under load: %v", svc.FirstError)
	}
	if childUsed.Load() >= int64(len(cbs)) {
		r.report.detail(area, "the pre-signed callbacks ran out before the time bound: the count bound ended the run")
	}

	ratio := svc.Throughput() / base.Throughput()
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("installs/s, %d conns", conns),
		Value: perSecond(svc), Baseline: perSecond(base) + " (raw INSERT)",
		Ratio: fmt.Sprintf("%.2f", ratio), Target: fmt.Sprintf("≥ %.1f and ≥ %.0f/s", ingestRatioTarget, ingestRateTarget),
		Pass: pass(ratio >= ingestRatioTarget && svc.Throughput() >= ingestRateTarget)})
	r.report.add(Figure{Area: area, Name: "installs/s vs raw INSERT with event row",
		Value: perSecond(svc), Baseline: perSecond(baseEvent) + " (raw INSERT + event)",
		Ratio: fmt.Sprintf("%.2f", svc.Throughput()/baseEvent.Throughput())})
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("callback latency p50 / p99, %d conns", conns),
		Value:    fmt.Sprintf("%s / %s", ms(svc.Quantile(50)), ms(svc.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s", ms(base.Quantile(50)), ms(base.Quantile(99)))})
	r.report.add(Figure{Area: area, Name: "server CPU per install (the broker process; Postgres not included)",
		Value: us(svc.perRequest(0))})
	return nil
}

// keyID is the id of the bench keyring's primary key ("id:base64").
func (r *runner) keyID() string {
	id, _, _ := strings.Cut(r.keys, ":")
	return id
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}
