# irisx-broker: `make run` starts the service in dev mode against the local
# Postgres; `make test` runs every test with -race against real Postgres.
# Both first run scripts/ensure-postgres.sh, which starts (or, as root on
# Debian/Ubuntu, installs) Postgres when none answers and prints the URL.

SHELL := /bin/bash
GO ?= go
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME ?= 30s

HELM ?= $(GO) run helm.sh/helm/v3/cmd/helm@v3.22.0
# DEV_FLAGS: extra flags for `irisx-broker dev` (e.g. -sim-addr 127.0.0.1:0)
DEV_FLAGS ?=

.PHONY: run test helm-lint lint fuzz generate build chromium bench bench-smoke drills

## run: the service with the in-process Trackunit simulator (dev mode)
run:
	@eval "$$(scripts/ensure-postgres.sh run)" && exec $(GO) run ./cmd/irisx-broker dev $(DEV_FLAGS)

## test: every test, with the race detector, against real Postgres (and
## Debian's Chromium for the admin page test and Debian's pgbouncer for the
## PgBouncer tests, installed when missing), then the Helm chart's lint
test: chromium helm-lint
	@eval "$$(scripts/ensure-postgres.sh test --pgbouncer)" && $(GO) test -race -count=1 -timeout 12m ./...

## helm-lint: helm lint --strict on the chart (helm through the module proxy)
helm-lint:
	$(HELM) lint --strict deploy/helm/irisx-broker

## build: both binaries into bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

## lint: gofmt, go vet and staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## fuzz: each fuzz target for FUZZTIME
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzVerify$$' -fuzztime=$(FUZZTIME) ./identity/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeInstallBody$$' -fuzztime=$(FUZZTIME) ./api/

## generate: regenerate the protobuf/Connect code (tools pinned, installed with go install)
generate:
	bash tools/generate.sh

## chromium: Debian's Chromium for the admin page's browser test
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium (needs root)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }


## bench: the benchmarks against the local Postgres (about fifteen minutes, a third of it loading 10 M installs and filling 100,000 tokens twice; run on a quiet machine); writes docs/BENCHMARKS.md
bench:
	$(GO) run ./cmd/irisx-bench -out docs/BENCHMARKS.md

## bench-smoke: every benchmark phase scaled down to seconds; the report goes to a temporary file
bench-smoke:
	$(GO) run ./cmd/irisx-bench -quick -dbname irisx_bench_smoke -out "$$(mktemp -d)/BENCHMARKS.md"

## drills: the full failure drills (about 15 minutes with the 10-minute soak; SOAK_DURATION changes it)
drills:
	$(GO) test -tags drills -race=false -count=1 -v -timeout 45m ./drills/
