#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the tests, owned by the `postgres`
# system user in a temporary directory. Usage: source .ci/pg.sh start | stop
# Exports LOYALTYCTL_TEST_PG when started.
set -euo pipefail

PG_PORT="${PG_PORT:-54329}"
PG_DIR="${PG_DIR:-/tmp/loyaltyctl-pg}"

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

pg_start() {
  local bin
  if ! bin=$(pg_bin); then
    echo "PostgreSQL server binaries missing: installing the Debian package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
    bin=$(pg_bin)
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" --shell /bin/bash postgres
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
  mkdir -p "$PG_DIR"
  chown postgres "$PG_DIR"
  runuser -u postgres -- "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || runuser -u postgres -- "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
       --encoding=UTF8 >"$PG_DIR/initdb.log" 2>&1
  runuser -u postgres -- "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" start >/dev/null
  runuser -u postgres -- "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q \
    -c "CREATE DATABASE loyalty_test" >/dev/null
  export LOYALTYCTL_TEST_PG="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/loyalty_test"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT" >&2
}

pg_stop() {
  local bin
  bin=$(pg_bin) || return 0
  [ -d "$PG_DIR/data" ] && runuser -u postgres -- "$bin/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) pg_start ;;
  stop) pg_stop ;;
  *) echo "usage: source .ci/pg.sh start|stop" >&2; return 2 2>/dev/null || exit 2 ;;
esac
