#!/usr/bin/env bash
# ensure-postgres.sh: make sure a Postgres answers for `make run`, `make test`
# and CI, then print (on stdout, for eval) the URL to use. Everything else
# goes to stderr.
#
#   eval "$(scripts/ensure-postgres.sh test)"   # exports TEST_DATABASE_URL, or unsets it (testcontainers)
#   eval "$(scripts/ensure-postgres.sh run)"    # exports DATABASE_URL
#   scripts/ensure-postgres.sh test --pgbouncer # also installs Debian's pgbouncer when missing
#
# In order, it uses:
#   1. the Postgres answering on PG_HOST:PG_PORT (default 127.0.0.1:5432);
#   2. else the installed Debian cluster (pg_ctlcluster VERSION PG_CLUSTER start);
#   3. else, as root with apt, Debian's postgresql, installed and given loopback
#      trust authentication for the user postgres, then started;
#   4. else, where a Docker engine answers: for tests nothing (testcontainers-go
#      starts a container), for `run` a postgres container on PG_HOST:PG_PORT;
#   5. else it stops with one message saying what to install.
#
# Knobs (for tests of this script and unusual machines): PG_HOST, PG_PORT,
# PG_CLUSTER (default main), PG_VERSION (default: the newest installed),
# PG_ETC (default /etc/postgresql),
# ENSURE_PG_NO_INSTALL=1 (never apt-get), ENSURE_PG_NO_DOCKER=1, PG_WAIT
# (seconds to wait for readiness, default 30), PG_DOCKER_IMAGE.
set -euo pipefail

mode="${1:-}"
shift || true
want_pgbouncer=0
for arg in "$@"; do
  case "$arg" in
    --pgbouncer) want_pgbouncer=1 ;;
    *) echo "ensure-postgres: unknown argument $arg" >&2; exit 2 ;;
  esac
done
case "$mode" in
  run | test) ;;
  *) echo "usage: ensure-postgres.sh run|test [--pgbouncer]" >&2; exit 2 ;;
esac

host="${PG_HOST:-127.0.0.1}"
port="${PG_PORT:-5432}"
cluster="${PG_CLUSTER:-main}"
etc="${PG_ETC:-/etc/postgresql}"
wait_s="${PG_WAIT:-30}"
docker_image="${PG_DOCKER_IMAGE:-postgres:17}"
base="postgres://postgres@${host}:${port}"

say() { echo "ensure-postgres: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }
# Debian puts pgbouncer and the cluster tools outside a user's PATH.
PATH="$PATH:/usr/sbin:/usr/lib/postgresql/bin"

ready() { have pg_isready && pg_isready -q -h "$host" -p "$port" >/dev/null 2>&1; }
wait_ready() {
  for _ in $(seq 1 "$wait_s"); do
    ready && return 0
    sleep 1
  done
  ready
}

apt_install() {
  is_root && have apt-get && [ "${ENSURE_PG_NO_INSTALL:-}" != 1 ] || return 1
  say "installing Debian's $*"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The newest installed cluster version that has a cluster named $cluster.
cluster_version() {
  if [ -n "${PG_VERSION:-}" ]; then echo "$PG_VERSION"; return; fi
  [ -d "$etc" ] || return 0
  for v in $(ls "$etc" | sort -V -r); do
    if [ -d "$etc/$v/$cluster" ]; then echo "$v"; return; fi
  done
}

start_cluster() {
  have pg_ctlcluster || return 1
  local v
  v="$(cluster_version)"
  [ -n "$v" ] || return 1
  say "starting the installed cluster $v/$cluster"
  pg_ctlcluster --skip-systemctl-redirect "$v" "$cluster" start >&2 || true
  wait_ready
}

# Tests and dev connect as postgres over loopback without a password.
trust_loopback() {
  local v hba
  v="$(cluster_version)"
  hba="$etc/$v/$cluster/pg_hba.conf"
  [ -f "$hba" ] || return 0
  sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
}

docker_ok() { [ "${ENSURE_PG_NO_DOCKER:-}" != 1 ] && have docker && docker info >/dev/null 2>&1; }

print_url() {
  if [ "$mode" = test ]; then
    echo "export TEST_DATABASE_URL='${base}/postgres?sslmode=disable'"
  else
    echo "export DATABASE_URL='${base}/irisx_broker?sslmode=disable'"
  fi
}

ensure_pgbouncer() {
  [ "$want_pgbouncer" = 1 ] || return 0
  have pgbouncer && return 0
  apt_install pgbouncer && have pgbouncer && return 0
  say "pgbouncer is not installed: the PgBouncer tests fail under CI=true (install Debian's pgbouncer: apt-get install pgbouncer)"
}

ensure_pgbouncer

# A URL chosen by the caller wins.
if [ "$mode" = test ] && [ -n "${TEST_DATABASE_URL:-}" ]; then
  echo "export TEST_DATABASE_URL='${TEST_DATABASE_URL}'"
  exit 0
fi
if [ "$mode" = run ] && [ -n "${DATABASE_URL:-}" ]; then
  echo "export DATABASE_URL='${DATABASE_URL}'"
  exit 0
fi

if ready; then
  print_url
  exit 0
fi
if start_cluster; then
  say "Postgres is ready on $host:$port"
  print_url
  exit 0
fi
if ! have pg_ctlcluster || [ -z "$(cluster_version)" ]; then
  if apt_install postgresql; then
    trust_loopback
    if start_cluster; then
      say "Postgres is ready on $host:$port"
      print_url
      exit 0
    fi
  fi
fi
if docker_ok; then
  if [ "$mode" = test ]; then
    say "no local Postgres; the tests start one with testcontainers-go (Docker)"
    echo "unset TEST_DATABASE_URL"
    exit 0
  fi
  say "no local Postgres; starting the container irisx-broker-postgres ($docker_image) on $host:$port"
  docker start irisx-broker-postgres >/dev/null 2>&1 ||
    docker run -d --name irisx-broker-postgres -p "$host:$port:5432" \
      -e POSTGRES_HOST_AUTH_METHOD=trust "$docker_image" >/dev/null
  for _ in $(seq 1 "$wait_s"); do
    docker exec irisx-broker-postgres pg_isready -q -h 127.0.0.1 >/dev/null 2>&1 && break
    sleep 1
  done
  print_url
  exit 0
fi

say "no Postgres answers on $host:$port and none could be started."
say "Install PostgreSQL (Debian/Ubuntu, as root: apt-get install postgresql; or run this script as root to do it)"
say "and allow the user postgres over loopback without a password (trust in pg_hba.conf), or start Docker."
exit 1
