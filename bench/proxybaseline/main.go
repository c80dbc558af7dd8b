// Command proxybaseline is the bare reverse proxy of the IRIS proxy
// benchmark, run as a process of its own like the broker: a
// net/http/httputil.ReverseProxy doing the same forwarding as the broker's
// proxy (path under /iris/accounts/{id}/ to UPSTREAM, Cookie dropped, a
// fixed bearer token, streamed) with no authentication, path checks, token
// lookup, logging or metrics.
//
//	proxybaseline ADDR UPSTREAM TOKEN
package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "proxybaseline:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 4 {
		return errors.New("usage: proxybaseline ADDR UPSTREAM TOKEN")
	}
	up, err := url.Parse(args[2])
	if err != nil {
		return err
	}
	auth := "Bearer " + args[3]
	// The broker's upstream transport keeps as many idle connections; the
	// default transport's two would make this baseline redial under load.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxConnsPerHost, t.MaxIdleConnsPerHost = 512, 256
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rest := strings.TrimPrefix(pr.In.URL.Path, "/iris/accounts/")
			if _, p, ok := strings.Cut(rest, "/"); ok {
				rest = p
			}
			pr.Out.URL = &url.URL{Scheme: up.Scheme, Host: up.Host, Path: up.Path + "/" + rest, RawQuery: pr.In.URL.RawQuery}
			pr.Out.Host = ""
			pr.Out.Header.Del("Cookie")
			pr.Out.Header["Authorization"] = []string{auth}
		},
		Transport:     t,
		FlushInterval: -1,
		ModifyResponse: func(r *http.Response) error {
			r.Header.Del("Set-Cookie")
			return nil
		},
	}
	srv := &http.Server{Addr: args[1], Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	return srv.ListenAndServe()
}
