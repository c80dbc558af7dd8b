package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// Targets of the scale phase.
const (
	listRatioTarget = 1.2
	rssTarget       = 100 << 20
)

// scaleApp is the app of the bulk-loaded installs. It sorts after the
// other phases' apps, so the late page falls among its rows.
const scaleApp = "@irisx/bench-scale"

// bulkInstallsSQL inserts $3 installs of app $1 under key id $2 with
// random ciphertext-sized bytes (48 and 68, as the broker's sealed client
// id and secret); listing never opens them. Each batch is sorted by account
// id before it is inserted, which keeps the primary key's inserts local
// (about twice as fast as in random order at 10 M rows).
const bulkInstallsSQL = `INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc,
		client_secret_enc, credentials_version, installed_at, updated_at, last_event_at)
	SELECT $1, a, 'installed', $2, substring(r FROM 1 FOR 48), substring(r FROM 17 FOR 68), 1, now(), now(), now()
	FROM (SELECT gen_random_uuid() AS a,
			uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) ||
			uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) AS r
		FROM generate_series(1, $3)) g
	ORDER BY a`

// scalePhase loads the installs table, restarts the broker on it and
// measures start time, RSS, and the first page against a late page.
func (r *runner) scalePhase(ctx context.Context) (err error) {
	const area = "Scale"
	if err := stopChild(r.primary); err != nil {
		return err
	}
	r.primary = nil
	total, err := r.bulkLoad(ctx, r.sc.listInstalls)
	if err != nil {
		return err
	}
	// The RSS broker is started first and alone; its installs sort before
	// the bulk-loaded ones (harness.App < scaleApp).
	if err := r.cachedTokensRSS(ctx); err != nil {
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
	const batch = 1_000_000
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
	r.report.detail("Scale", "bulk-loaded %d installs in %v (INSERT ... SELECT generate_series, sorted batches of 1,000,000), VACUUM ANALYZE in %v; %d installs in all",
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
	sctx, stop := context.WithCancel(ctx)
	sampler := harness.SamplePeakRSS(sctx, child.PID, 100*time.Millisecond)
	res, err := loadgen.Run(ctx, loadgen.Config{Workers: r.sc.tokenConns, Duration: r.sc.rssLoad},
		getTokenLoad(r.sc.tokenConns, child.InternalURL(), body))
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

// listPages measures the first page against a deep one. The deep page's
// token is made as the API makes it (store.PageToken, under the bench's
// keyring) for the row before the page, found with OFFSET in SQL: walking
// there through 100,000 pages at 10 M installs would take minutes. The page
// is checked against SQL, and the token the API hands out at its end
// against the one made the same way.
func (r *runner) listPages(ctx context.Context, child *harness.Child) error {
	const area = "Scale"
	// The middle of the table: page 100,000 at 10 M installs. The other
	// phases' installs sort first, so it falls among the loaded rows.
	page := max(2, r.sc.listInstalls/2/listPageSize)
	ic := harness.InstallClient(loadgen.HTTP1Client(1), child.InternalURL())
	began := time.Now()
	st, closeStore, err := r.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	before, err := r.installAt(ctx, (page-1)*listPageSize-1)
	if err != nil {
		return err
	}
	pageToken := st.PageToken(before, "", "")
	late, err := harness.ListInstalls(ctx, ic, listPageSize, pageToken)
	if err != nil {
		return err
	}
	if n := len(late.GetInstalls()); n != listPageSize {
		return fmt.Errorf("page %d holds %d installs", page, n)
	}
	for _, at := range []struct {
		offset int
		got    *brokerv1.Install
	}{{(page - 1) * listPageSize, late.GetInstalls()[0]}, {page*listPageSize - 1, late.GetInstalls()[listPageSize-1]}} {
		want, err := r.installAt(ctx, at.offset)
		if err != nil {
			return err
		}
		if at.got.GetIrisAppId() != want.IrisAppID || at.got.GetAccountId() != want.AccountID {
			return fmt.Errorf("page %d: row %d is %s/%s, SQL OFFSET says %s/%s", page, at.offset,
				at.got.GetIrisAppId(), at.got.GetAccountId(), want.IrisAppID, want.AccountID)
		}
	}
	last := late.GetInstalls()[listPageSize-1]
	if want := st.PageToken(store.InstallKey{IrisAppID: last.GetIrisAppId(), AccountID: last.GetAccountId()}, "", ""); late.GetNextPageToken() != want {
		return fmt.Errorf("page %d: the API's next page token differs from the one store.PageToken makes", page)
	}
	r.report.detail(area, "page %d (rows %d-%d of %d installs): token made with store.PageToken for the row OFFSET %d finds; "+
		"its first and last rows match OFFSET in SQL and its next page token is the one the API makes (%v)",
		page, (page-1)*listPageSize+1, page*listPageSize, r.sc.listInstalls, (page-1)*listPageSize-1, time.Since(began).Round(time.Millisecond))

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
	// First and deep page alternate in short runs, so that a change in the
	// machine's load falls on both alike.
	var first, deep []loadgen.Result
	for range listRounds {
		cfg.Duration = r.sc.listMeasure / listRounds
		f, err := loadgen.Run(ctx, cfg, listOp(""))
		if err != nil {
			return err
		}
		d, err := loadgen.Run(ctx, cfg, listOp(pageToken))
		if err != nil {
			return err
		}
		first, deep = append(first, f), append(deep, d)
	}
	f, d := loadgen.Merge(first), loadgen.Merge(deep)
	r.report.result(area, "ListInstalls first page", f)
	r.report.result(area, fmt.Sprintf("ListInstalls page %d", page), d)
	if f.Errors+d.Errors > 0 {
		return fmt.Errorf("ListInstalls failed: %v / %v", f.FirstError, d.FirstError)
	}
	ratio := float64(d.Quantile(50)) / float64(f.Quantile(50))
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("ListInstalls deep page at %s installs vs page 1: page %d (pageSize %d), p50 / p99",
		count(r.sc.listInstalls), page, listPageSize),
		Value:    fmt.Sprintf("%s / %s", ms(d.Quantile(50)), ms(d.Quantile(99))),
		Baseline: fmt.Sprintf("%s / %s (page 1)", ms(f.Quantile(50)), ms(f.Quantile(99))),
		Ratio:    fmt.Sprintf("%.2f (p50)", ratio), Target: fmt.Sprintf("≤ %.1f", listRatioTarget),
		Pass: pass(ratio <= listRatioTarget)})
	r.report.note(area, "**Deep page.** Page %d of %s installs answered in %s at p50 against %s for page 1 (%.2f×, target "+
		"%.1f×): the page token names the last row seen and the store seeks to it on the primary key "+
		"(`WHERE (iris_app_id, account_id) > ($1, $2) ORDER BY iris_app_id, account_id LIMIT n`), one index descent "+
		"whatever the depth, so a deep page costs what the first does plus a deeper B-tree by a level at most.",
		page, count(r.sc.listInstalls), ms(d.Quantile(50)), ms(f.Quantile(50)), ratio, listRatioTarget)
	return nil
}

// listRounds is how many alternating runs of each page the measurement has.
const listRounds = 5

// openStore opens a store on the bench database under the bench's keyring,
// for page tokens.
func (r *runner) openStore(ctx context.Context) (*store.Store, func(), error) {
	keys, err := crypto.ParseKeyring(r.keys)
	if err != nil {
		return nil, nil, err
	}
	pool, err := store.Open(ctx, r.dbURL)
	if err != nil {
		return nil, nil, err
	}
	return store.New(pool, keys), pool.Close, nil
}

// installAt is the install at offset (0-based) in ListInstalls' order.
func (r *runner) installAt(ctx context.Context, offset int) (store.InstallKey, error) {
	conn, err := pgx.Connect(ctx, r.dbURL)
	if err != nil {
		return store.InstallKey{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var k store.InstallKey
	err = conn.QueryRow(ctx, `SELECT iris_app_id, account_id::text FROM installs
		ORDER BY iris_app_id, account_id OFFSET $1 LIMIT 1`, offset).Scan(&k.IrisAppID, &k.AccountID)
	return k, err
}

// count renders n as "10 M", "20 k" or n.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + " M"
	case n >= 1_000 && n%100 == 0:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e3), ".0") + " k"
	}
	return fmt.Sprint(n)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
