package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Targets of the scale phase.
const (
	listRatioTarget = 1.5
	rssTarget       = 100 << 20
)

// scaleApp is the app of the bulk-loaded installs. It sorts after the
// other phases' apps, so the late page falls among its rows.
const scaleApp = "@irisx/bench-scale"

// bulkInstallsSQL inserts $3 installs of app $1 under key id $2 with
// random ciphertext-sized bytes (48 and 68, as the broker's sealed client
// id and secret); listing never opens them.
const bulkInstallsSQL = `INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc,
		client_secret_enc, credentials_version, installed_at, updated_at, last_event_at)
	SELECT $1, gen_random_uuid(), 'installed', $2,
		uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
		uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) ||
			uuid_send(gen_random_uuid()) || substring(uuid_send(gen_random_uuid()) FROM 1 FOR 4),
		1, now(), now(), now()
	FROM generate_series(1, $3)`

// scalePhase loads the installs table, restarts the broker on it and
// measures start time, RSS, and the first page against a late page.
func (r *runner) scalePhase(ctx context.Context) (err error) {
	const area = "Scale"
	if err := stopChild(r.primary); err != nil {
		return err
	}
	r.primary = nil
	total, err := r.bulkLoad(ctx, r.sc.scaleRows)
	if err != nil {
		return err
	}

	child, err := r.startBroker(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopChild(child)) }()
	start, err := child.WaitReady(ctx)
	if err != nil {
		return err
	}
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("serve start to /readyz 200, %d installs", total),
		Value: start.Round(time.Millisecond).String(), Baseline: r.firstStart.Round(time.Millisecond).String() + " (empty, migrating)"})

	if err := r.rss(ctx, child); err != nil {
		return err
	}
	return r.listPages(ctx, child)
}

// bulkLoad inserts n installs in batches, analyses the table and returns
// how many installs it holds in all.
func (r *runner) bulkLoad(ctx context.Context, n int) (int, error) {
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	began := time.Now()
	const batch = 100_000
	for done := 0; done < n; done += batch {
		if _, err := conn.Exec(ctx, bulkInstallsSQL, scaleApp, r.keyID(), min(batch, n-done)); err != nil {
			return 0, fmt.Errorf("bulk load: %w", err)
		}
	}
	loaded := time.Since(began)
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE installs"); err != nil {
		return 0, err
	}
	var total int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM installs").Scan(&total); err != nil {
		return 0, err
	}
	r.report.detail("Scale", "bulk-loaded %d installs in %v (INSERT ... SELECT generate_series), VACUUM ANALYZE in %v; %d installs in all",
		n, loaded.Round(time.Millisecond), (time.Since(began) - loaded).Round(time.Millisecond), total)
	return total, nil
}

// rss reads the broker's RSS idle and its peak under token load.
func (r *runner) rss(ctx context.Context, child *harness.Child) error {
	const area = "Scale"
	time.Sleep(r.sc.warmup / 2) // let start-up garbage be collected
	idle, err := child.RSS()
	if err != nil {
		return err
	}
	cb, err := harness.NewCallback(r.sim.Sim, harness.App, true)
	if err != nil {
		return err
	}
	if err := cb.PostInstalled(ctx, loadgen.HTTP1Client(1), child.PublicURL()); err != nil {
		return err
	}
	body := harness.TokenRequestBody(harness.App, cb.AccountID)
	client := loadgen.HTTP1Client(r.sc.tokenConns)
	sctx, stop := context.WithCancel(ctx)
	sampler := harness.SamplePeakRSS(sctx, child.PID, 100*time.Millisecond)
	res, err := loadgen.Run(ctx, loadgen.Config{Workers: r.sc.tokenConns, Duration: r.sc.rssLoad}, func(ctx context.Context, _ int) error {
		a, err := harness.GetTokenJSON(ctx, client, child.InternalURL(), body)
		if err == nil && a.HTTPStatus != http.StatusOK {
			err = fmt.Errorf("GetToken answered %d %s", a.HTTPStatus, a.Code)
		}
		return err
	})
	stop()
	peak, perr := sampler.Wait()
	if err = errors.Join(err, perr); err != nil {
		return err
	}
	r.report.result(area, "token load while sampling RSS", res)
	r.report.add(Figure{Area: area, Name: "RSS idle, after start", Value: mib(idle),
		Target: "≤ " + mib(rssTarget), Pass: pass(idle <= rssTarget)})
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("RSS peak under token load, %d conns", r.sc.tokenConns),
		Value: mib(peak), Baseline: mib(idle) + " (idle)", Target: "≤ " + mib(rssTarget), Pass: pass(peak <= rssTarget)})
	return nil
}

// listPages walks the page tokens to the late page, checks it against
// OFFSET in SQL, and measures it against the first page.
func (r *runner) listPages(ctx context.Context, child *harness.Child) error {
	const area = "Scale"
	// Page 10,000 for a million installs: the 500,000th row. The other
	// phases' installs sort first, so it falls among the loaded rows.
	page := r.sc.scaleRows / 2 / listPageSize
	ic := harness.InstallClient(loadgen.HTTP1Client(1), child.InternalURL())
	began := time.Now()
	pageToken, err := walkTo(ctx, ic, page)
	if err != nil {
		return err
	}
	late, err := harness.ListInstalls(ctx, ic, listPageSize, pageToken)
	if err != nil {
		return err
	}
	if err := r.checkPage(ctx, page, late.GetInstalls()[0].GetIrisAppId(), late.GetInstalls()[0].GetAccountId()); err != nil {
		return err
	}
	r.report.detail(area, "walked the page tokens to page %d (rows %d-%d) in %v; its first row matches OFFSET %d in SQL",
		page, (page-1)*listPageSize+1, page*listPageSize, time.Since(began).Round(time.Millisecond), (page-1)*listPageSize)

	cfg := loadgen.Config{Workers: 1, Warmup: r.sc.warmup / 4, Duration: r.sc.listMeasure}
	listOp := func(token string) loadgen.Op {
		return func(ctx context.Context, _ int) error {
			resp, err := harness.ListInstalls(ctx, ic, listPageSize, token)
			if err == nil && len(resp.GetInstalls()) != listPageSize {
				err = fmt.Errorf("a page of %d installs", len(resp.GetInstalls()))
			}
			return err
		}
	}
	first, err := loadgen.Run(ctx, cfg, listOp(""))
	if err != nil {
		return err
	}
	r.report.result(area, "ListInstalls first page", first)
	last, err := loadgen.Run(ctx, cfg, listOp(pageToken))
	if err != nil {
		return err
	}
	r.report.result(area, fmt.Sprintf("ListInstalls page %d", page), last)
	if first.Errors+last.Errors > 0 {
		return fmt.Errorf("ListInstalls failed: %v / %v", first.FirstError, last.FirstError)
	}
	ratio := float64(last.Quantile(50)) / float64(first.Quantile(50))
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("ListInstalls page %d vs page 1 (pageSize %d), p50 / p99", page, listPageSize),
		Value:    fmt.Sprintf("%s / %s", ms(last.Quantile(50)), ms(last.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s (page 1)", ms(first.Quantile(50)), ms(first.Quantile(99))),
		Ratio:    fmt.Sprintf("%.2f (p50)", ratio), Target: fmt.Sprintf("≤ %.1f", listRatioTarget),
		Pass: pass(ratio <= listRatioTarget)})
	return nil
}

// walkPageSize is the page size of the walk to the late page: a multiple
// of listPageSize, and below 1,000 because a page of exactly 1,000 (the
// contract's maximum) comes without a next page token: the API asks the
// store for one row more than the page, which the store caps at 1,000.
const walkPageSize = 950

// walkTo follows page tokens to the start of page (1-based, pages of
// listPageSize): big pages first, then pages of listPageSize, since a token
// only names the last row seen.
func walkTo(ctx context.Context, ic brokerv1connect.InstallServiceClient, page int) (string, error) {
	skip := (page - 1) * listPageSize
	token := ""
	for skip > 0 {
		size := int32(listPageSize)
		if skip >= walkPageSize {
			size = walkPageSize
		}
		resp, err := harness.ListInstalls(ctx, ic, size, token)
		if err != nil {
			return "", err
		}
		if len(resp.GetInstalls()) != int(size) || resp.GetNextPageToken() == "" {
			return "", fmt.Errorf("walking the pages: a page of %d installs, next token %q", len(resp.GetInstalls()), resp.GetNextPageToken())
		}
		skip -= int(size)
		token = resp.GetNextPageToken()
	}
	return token, nil
}

// checkPage confirms that the late page starts at the row OFFSET finds.
func (r *runner) checkPage(ctx context.Context, page int, app, account string) error {
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var wantApp, wantAccount string
	err = conn.QueryRow(ctx, `SELECT iris_app_id, account_id::text FROM installs
		ORDER BY iris_app_id, account_id OFFSET $1 LIMIT 1`, (page-1)*listPageSize).Scan(&wantApp, &wantAccount)
	if err != nil {
		return err
	}
	if app != wantApp || account != wantAccount {
		return fmt.Errorf("page %d starts at %s/%s, SQL OFFSET says %s/%s", page, app, account, wantApp, wantAccount)
	}
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
