#!/usr/bin/env bash
# Starts a throw-away MariaDB and PostgreSQL on loopback for the write-path tests, and prints the
# URLs for the tests as `export` lines:
#
#   eval "$(scripts/ci-services.sh)"        # start (idempotent; installs the servers if missing)
#   scripts/ci-services.sh stop             # stop both and delete their data
#
# Runs as root on Debian 12. Not the system services: each server gets a data dir under
# $C10K_SERVICES_DIR (default /tmp/c10k-ci) and its own port, so it never touches a machine's real
# databases. Everything but the export lines goes to stderr.
set -euo pipefail

BASE=${C10K_SERVICES_DIR:-/tmp/c10k-ci}
MY_PORT=${C10K_MYSQL_PORT:-23306}
PG_PORT=${C10K_PG_PORT:-25432}
MY_DIR=$BASE/mariadb
PG_DIR=$BASE/postgres
log() { echo "ci-services: $*" >&2; }

stop() {
  if [[ -S $MY_DIR/mysqld.sock ]] || [[ -f $MY_DIR/mysqld.pid ]]; then
    mariadb-admin --no-defaults --socket="$MY_DIR/mysqld.sock" -uroot shutdown 2>/dev/null ||
      kill "$(cat "$MY_DIR/mysqld.pid" 2>/dev/null)" 2>/dev/null || true
  fi
  if [[ -f $PG_DIR/data/postmaster.pid ]]; then
    su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D '$PG_DIR/data' -m fast -w stop" >&2 || true
  fi
  rm -rf "$BASE"
  log "stopped and removed $BASE"
}

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d ]] || { log "PostgreSQL binaries not found under /usr/lib/postgresql"; exit 1; }
  echo "$d"
}

install_missing() {
  local need=()
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || need+=(mariadb-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps the packages from starting the system services we do not use.
    local ours=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      ours=1
    fi
    apt-get install -y -qq "${need[@]}" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >&2; }
    [[ -z $ours ]] || rm -f /usr/sbin/policy-rc.d
  fi
}

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what did not come up"; return 1
}

start_mariadb() {
  local sbin=/usr/sbin/mariadbd
  [[ -x $sbin ]] || sbin=$(command -v mariadbd)
  mkdir -p "$MY_DIR"
  chown mysql:mysql "$MY_DIR"
  if mariadb-admin --no-defaults --socket="$MY_DIR/mysqld.sock" -uroot ping >/dev/null 2>&1; then
    log "MariaDB already running on 127.0.0.1:$MY_PORT"
  else
    if [[ ! -d $MY_DIR/data/mysql ]]; then
      log "initialising MariaDB in $MY_DIR/data"
      mariadb-install-db --no-defaults --user=mysql --datadir="$MY_DIR/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$MY_DIR/install.log" 2>&1 ||
        { cat "$MY_DIR/install.log" >&2; exit 1; }
    fi
    # Whatever is left of an earlier server that no longer answers (killed with the session
    # that started it) would block the socket and the data dir's lock: clear it.
    pkill -9 -f -- "--datadir=$MY_DIR/data" 2>/dev/null || true
    rm -f "$MY_DIR/mysqld.sock" "$MY_DIR/mysqld.sock.lock" "$MY_DIR/mysqld.pid"
    log "starting MariaDB on 127.0.0.1:$MY_PORT"
    setsid "$sbin" --no-defaults --user=mysql --datadir="$MY_DIR/data" \
      --socket="$MY_DIR/mysqld.sock" --pid-file="$MY_DIR/mysqld.pid" \
      --skip-networking=0 --bind-address=127.0.0.1 --port="$MY_PORT" \
      --log-error="$MY_DIR/error.log" --innodb-buffer-pool-size=128M \
      </dev/null >/dev/null 2>&1 &
    wait_for MariaDB mariadb-admin --no-defaults --socket="$MY_DIR/mysqld.sock" -uroot ping ||
      { tail -20 "$MY_DIR/error.log" >&2; exit 1; }
  fi
  mariadb --no-defaults --socket="$MY_DIR/mysqld.sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS c10k CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'c10k'@'127.0.0.1' IDENTIFIED BY 'c10k';
CREATE USER IF NOT EXISTS 'c10k'@'localhost' IDENTIFIED BY 'c10k';
GRANT ALL ON c10k.* TO 'c10k'@'127.0.0.1';
GRANT ALL ON c10k.* TO 'c10k'@'localhost';
-- Tests that need an empty database create and drop their own c10k_* ones.
GRANT ALL ON `c10k\_%`.* TO 'c10k'@'127.0.0.1';
GRANT ALL ON `c10k\_%`.* TO 'c10k'@'localhost';
SQL
}

start_postgres() {
  local bin
  bin=$(pg_bin)
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  if [[ ! -f $PG_DIR/data/PG_VERSION ]]; then
    log "initialising PostgreSQL in $PG_DIR/data"
    su postgres -s /bin/sh -c "$bin/initdb -D '$PG_DIR/data' -U postgres --auth=trust -E UTF8" \
      >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
  fi
  # Running means answering on the port: a pid file of a killed (or zombie) server is not.
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
  else
    pkill -9 -f -- "-D $PG_DIR/data" 2>/dev/null || true
    rm -f "$PG_DIR/data/postmaster.pid" "$PG_DIR"/.s.PGSQL.*
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    su postgres -s /bin/sh -c "$bin/pg_ctl -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -t 30 \
      -o \"-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200\" start" >&2 ||
      { tail -20 "$PG_DIR/server.log" >&2; exit 1; }
  fi
  local psql=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
  wait_for PostgreSQL "${psql[@]}" -c 'SELECT 1'
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'c10k'") ]]; then
    "${psql[@]}" -c "CREATE ROLE c10k LOGIN PASSWORD 'c10k'"
  fi
  # Tests that need an empty database create and drop their own.
  "${psql[@]}" -c "ALTER ROLE c10k CREATEDB"
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'c10k'") ]]; then
    "${psql[@]}" -c "CREATE DATABASE c10k OWNER c10k"
  fi
}

case ${1:-start} in
  stop) stop ;;
  start)
    [[ $(id -u) == 0 ]] || { log "run as root (it installs packages and runs servers as mysql/postgres)"; exit 1; }
    install_missing
    mkdir -p "$BASE"
    chmod 755 "$BASE"
    start_mariadb
    start_postgres
    echo "export C10K_TEST_MYSQL_URL=mysql://c10k:c10k@127.0.0.1:$MY_PORT/c10k"
    echo "export C10K_TEST_POSTGRES_URL=postgres://c10k:c10k@127.0.0.1:$PG_PORT/c10k"
    ;;
  *) log "usage: $0 [start|stop]"; exit 2 ;;
esac
