#!/usr/bin/env bash
# A PostgreSQL server of kumo's own for the test suite's second pass (`make test-postgres`):
#   scripts/postgres.sh start   initdb (first time) and start it; idempotent
#   scripts/postgres.sh stop    stop exactly this server (its data dir's pid file), nothing else
#   scripts/postgres.sh url     print the URL the tests use (KUMO_TEST_DATABASE_URL)
# Its own cluster outside the repo ($KUMO_PG_DIR, default /var/tmp/kumo-test-postgres), owned by the
# `postgres` system user, listening only on 127.0.0.1:$KUMO_PG_PORT (55432, not Debian's 5432) and on a
# socket dir of its own; Debian's own cluster and service are never started or touched.
# Durability is off (fsync): it holds only throw-away test databases.
set -euo pipefail

DIR=${KUMO_PG_DIR:-/var/tmp/kumo-test-postgres}
PORT=${KUMO_PG_PORT:-55432}
DATA=$DIR/data
SOCK=$DIR/run
LOG=$DIR/server.log
URL="postgresql://kumo:kumo@127.0.0.1:$PORT/postgres"

die() { echo "postgres.sh: $*" >&2; exit 1; }
say() { printf '\033[1m[postgres]\033[0m %s\n' "$*"; }

bindir() {
  local b
  b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$b" ] && [ -x "$b/pg_ctl" ] || die "no PostgreSQL server found; install it: apt-get install postgresql (or run scripts/setup.sh as root)"
  echo "$b"
}

# Everything the server runs as the `postgres` user: root may not run postgres itself.
as_pg() { runuser -u postgres -- "$@"; }

running() { [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  [ "$(id -u)" = 0 ] || die "needs root (it runs the server as the postgres user via runuser); run it with sudo"
  id postgres >/dev/null 2>&1 || die "no 'postgres' system user; install PostgreSQL: apt-get install postgresql"
  BIN=$(bindir)
  if [ ! -f "$DATA/PG_VERSION" ]; then
    say "initdb $DATA"
    rm -rf "$DATA"
    install -d -o postgres -g postgres -m 700 "$DIR" "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 \
      --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed (log above)"; }
    cat >>"$DATA/postgresql.conf" <<EOF
# kumo's test server (scripts/postgres.sh starts it with its address, port and socket dir)
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  install -d -o postgres -g postgres -m 700 "$SOCK"
  if running; then
    "$BIN/pg_isready" -q -h "$SOCK" -p "$PORT" \
      || die "the server of $DATA runs, but not on port $PORT; stop it first: scripts/postgres.sh stop"
    say "already running on 127.0.0.1:$PORT ($DATA)"
  else
    say "starting on 127.0.0.1:$PORT ($DATA)"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$SOCK" start >/dev/null \
      || { tail -5 "$LOG" >&2 || true; die "the server did not start (log above: $LOG); is port $PORT taken? set KUMO_PG_PORT"; }
  fi
  # The role the tests connect as: creates (and drops) a database per kumo server.
  as_pg "$BIN/psql" -h "$SOCK" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -qAt >/dev/null <<'EOF'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kumo') THEN
    CREATE ROLE kumo LOGIN CREATEDB PASSWORD 'kumo';
  END IF;
END $$;
-- The store's unit tests fill the URL's own database (each kumo server gets one of its own).
GRANT CREATE ON SCHEMA public TO kumo;
EOF
  say "ready: $URL"
}

stop() {
  [ -f "$DATA/PG_VERSION" ] || { say "no server at $DATA"; return 0; }
  [ "$(id -u)" = 0 ] || die "needs root (the server runs as the postgres user); run it with sudo"
  BIN=$(bindir)
  if running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped ($DATA)"
  else
    say "not running ($DATA)"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) die "usage: scripts/postgres.sh start|stop|url" ;;
esac
