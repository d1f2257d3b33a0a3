#!/usr/bin/env bash
# A c10k cluster on this machine, with its faults: hosts are network namespaces on one bridge.
#
#   scripts/cluster.sh [HOSTS] [SCENARIO] [--postgres]
#
#   HOSTS     app hosts (default 2)
#   SCENARIO  steady | kill | db-cut | rolling | all, or a comma list (default all)
#   --postgres  the database host runs PostgreSQL instead of MariaDB
#
#                        198.18.0.0/24 (bridge br0 in namespace c10kcl-sw)
#   client1 .21 ─┐
#   client2 .22 ─┼──> lb .3 (nginx, least_conn) ──> app1 .11, app2 .12, ... (c10k serve :8000)
#                                                          │ journal per worker, own data dir
#                                                          └──> db .2 (mariadbd :3306 | postgres :5432)
#
# Every address is from 198.18.0.0/15 (reserved for network benchmarks) and exists only inside
# the namespaces this script creates; nothing is added to the machine's own network namespace,
# and no other address is ever a target. Everything it creates is named c10kcl-*: on exit
# (also Ctrl-C, TERM) it kills what runs in those namespaces and deletes them, and at start it
# clears what a crashed earlier run left. One run at a time (a lock).
#
# Each scenario prints one line of figures and the script exits 1 when a promise broke:
#   steady   write load; every acknowledged id unique across hosts and in the database once
#   kill     kill -9 of every process of one app host under write load, restart it (its journal
#            replays): acknowledged writes lost 0, duplicated 0; client failures counted
#   db-cut   the database host's link down for 10 s under write load: writes still acknowledged
#            from the journals, no 503 below --max-lag, the backlog drains to 0 afterwards
#   rolling  every app host restarted in turn under load: 0 failed requests at the client
#
# The client is `c10k bench` on two client hosts started together with --start-at, their
# latency logs merged with `c10k bench merge`, and every 201 body kept with --save-bodies (the
# acknowledged ids). nginx runs deploy/nginx/c10k-proxy.conf with its upstream rewritten.
#
# Needs root, iproute2 (ip netns), nginx, curl, python3 and mariadbd (or PostgreSQL). Knobs:
# C10K_BIN (default: cargo build --release, target/release/c10k), WORKERS per host (2), RATE
# (total requests/s, 300), CONNS per client host (16), ROLLING_LB_DOWN (1), OUT (figures file,
# default runs/<UTC date>/cluster.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=2
SCENARIO=all
DB=mariadb
positional=()
for arg in "$@"; do
  case $arg in
    --postgres) DB=postgres ;;
    --mariadb) DB=mariadb ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "cluster: unknown option $arg (try --help)" >&2; exit 2 ;;
    *) positional+=("$arg") ;;
  esac
done
[[ ${#positional[@]} -ge 1 ]] && HOSTS=${positional[0]}
[[ ${#positional[@]} -ge 2 ]] && SCENARIO=${positional[1]}
[[ ${#positional[@]} -le 2 ]] || { echo "cluster: usage: $0 [HOSTS] [SCENARIO] [--postgres]" >&2; exit 2; }
[[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 2 && HOSTS <= 50)) ||
  { echo "cluster: HOSTS $HOSTS: a number of app hosts in 2..50" >&2; exit 2; }
SCENARIOS=()
for s in ${SCENARIO//,/ }; do
  case $s in
    steady | kill | db-cut | rolling) SCENARIOS+=("$s") ;;
    all) SCENARIOS+=(steady kill db-cut rolling) ;;
    *) echo "cluster: SCENARIO $s: one of steady, kill, db-cut, rolling, all (or a comma list)" >&2; exit 2 ;;
  esac
done
((${#SCENARIOS[@]})) || { echo "cluster: SCENARIO: none given" >&2; exit 2; }

WORKERS=${WORKERS:-2}
RATE=${RATE:-300}
CONNS=${CONNS:-16}
# rolling: 1 (default) takes each host out of nginx's upstream first (a graceful reload), as a
# deploy tool does; 0 relies on the server alone: SIGTERM closes its listener (nginx retries a
# refused connect on the next host, safe for a POST: nothing was sent) and finishes what is in
# flight, but a POST nginx sends on a kept-alive connection the stopping host is closing fails
# (502): open-source nginx cannot see /readyz.
ROLLING_LB_DOWN=${ROLLING_LB_DOWN:-1}
CLIENTS=2
OUT=${OUT:-runs/$(date -u +%Y-%m-%d)/cluster.txt}
P=c10kcl
NET=198.18.0
LB_IP=$NET.3
DB_IP=$NET.2
APP_PORT=8000
ADMIN_PORT=9191
# The admin listener is on each host's 198.18 address, so c10k requires a token for all but
# /livez and /readyz; a fresh one per run, passed in the environment (never on a command line).
ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The write path's knobs the scenarios lean on.
MAX_LAG=100000
GRACEFUL=10
# A quarter second between flushes: a host killed under load always leaves rows in its journal
# that only the replay brings to the database (the default 20 ms leaves a handful or none).
FLUSH_INTERVAL=250

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it creates network namespaces)"
for tool in ip nginx curl python3; do
  command -v $tool >/dev/null || die "$tool is needed"
done
if [[ $DB == mariadb ]]; then
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || die "mariadbd is needed (apt-get install mariadb-server)"
else
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || die "PostgreSQL is needed (apt-get install postgresql)"
fi

mkdir -p /run/lock
exec 9>/run/lock/c10k-cluster.lock
flock -n 9 || die "another scripts/cluster.sh is running"

# --- cleanup ------------------------------------------------------------------------------

# Kills every process in our namespaces and deletes them, and our temp dirs: what this run
# made, or what a crashed run left (the lock says no other run is going).
teardown() {
  local ns pids
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf /tmp/$P.*
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0 || ${KEEP_LOGS:-0})) && [[ -n ${TMP:-} && -d ${TMP:-} && -n ${OUT:-} ]]; then
    # Keep what explains the failure: every server's log.
    local keep
    keep=$(dirname "$OUT")/cluster-logs
    mkdir -p "$keep"
    cp "$TMP"/*.log "$TMP"/*.err "$keep"/ 2>/dev/null || true
    cp "$TMP/nginx/error.log" "$keep/nginx-error.log" 2>/dev/null || true
    cp "$TMP/db/error.log" "$keep/db-error.log" 2>/dev/null || true
    log "logs kept in $keep"
  fi
  teardown
  exit $rc
}
teardown
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d /tmp/$P.XXXXXX)
chmod 755 "$TMP"

if [[ -n ${C10K_BIN:-} ]]; then
  BIN=$(realpath "$C10K_BIN")
else
  cargo build --release -q -p c10k
  BIN=$(realpath target/release/c10k)
fi
[[ -x $BIN ]] || die "no c10k binary at $BIN"

# --- the network ----------------------------------------------------------------------------

ip netns add $P-sw
ip -n $P-sw link set lo up
ip -n $P-sw link add br0 type bridge
ip -n $P-sw link set br0 up

# host NAME LAST_OCTET: a namespace with eth0 on the bridge at $NET.LAST_OCTET.
host() {
  local ns=$P-$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n $P-sw link add "h-$1" type veth peer name eth0 netns "$ns"
  ip -n $P-sw link set "h-$1" master br0 up
  ip -n "$ns" addr add "$NET.$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  # Short-lived connections in load tests: many ports, quick reuse.
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
}
in_ns() { local ns=$P-$1; shift; ip netns exec "$ns" "$@"; }
app_ip() { echo "$NET.$((10 + $1))"; }

host db 2
host lb 3
for c in $(seq 1 $CLIENTS); do host client$c $((20 + c)); done
for k in $(seq 1 "$HOSTS"); do host app$k $((10 + k)); done

# --- the database host ----------------------------------------------------------------------

wait_for() { # SECONDS WHAT COMMAND...
  local limit=$1 what=$2 t=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    sleep 0.2
    t=$((t + 1))
    ((t < limit * 5)) || { log "$what: not within ${limit}s"; return 1; }
  done
}

DBDIR=$TMP/db
mkdir -p "$DBDIR"
if [[ $DB == mariadb ]]; then
  chown mysql:mysql "$DBDIR"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DBDIR/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$DBDIR/install.log" 2>&1 ||
    { cat "$DBDIR/install.log" >&2; die "mariadb-install-db failed"; }
  sbin=/usr/sbin/mariadbd
  [[ -x $sbin ]] || sbin=$(command -v mariadbd)
  in_ns db setsid "$sbin" --no-defaults --user=mysql --datadir="$DBDIR/data" \
    --socket="$DBDIR/mysqld.sock" --pid-file="$DBDIR/mysqld.pid" --skip-name-resolve \
    --bind-address=$DB_IP --port=3306 --log-error="$DBDIR/error.log" \
    --innodb-buffer-pool-size=64M --max-connections=500 </dev/null >/dev/null 2>&1 &
  sql() { mariadb --no-defaults --socket="$DBDIR/mysqld.sock" -uroot -N -B "$@"; }
  wait_for 60 MariaDB sql -e 'SELECT 1' || { tail -20 "$DBDIR/error.log" >&2; exit 1; }
  sql <<SQL
CREATE DATABASE c10k CHARACTER SET utf8mb4;
CREATE USER 'c10k'@'$NET.%' IDENTIFIED BY 'c10k';
GRANT ALL ON c10k.* TO 'c10k'@'$NET.%';
SQL
  DB_URL=mysql://c10k:c10k@$DB_IP:3306/c10k
  db_query() { sql c10k -e "$1"; }
else
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  chown postgres:postgres "$DBDIR"
  su postgres -s /bin/sh -c "$pgbin/initdb -D '$DBDIR/data' -U postgres --auth=trust -E UTF8" \
    >"$DBDIR/initdb.log" 2>&1 || { cat "$DBDIR/initdb.log" >&2; die "initdb failed"; }
  echo "host all all $NET.0/24 scram-sha-256" >>"$DBDIR/data/pg_hba.conf"
  in_ns db su postgres -s /bin/sh -c "$pgbin/pg_ctl -D '$DBDIR/data' -l '$DBDIR/server.log' -w -t 60 \
    -o \"-p 5432 -k $DBDIR -c listen_addresses=$DB_IP -c max_connections=300\" start" >/dev/null ||
    { tail -20 "$DBDIR/server.log" >&2; die "PostgreSQL did not start"; }
  sql() { psql -X -q -h "$DBDIR" -p 5432 -U postgres -v ON_ERROR_STOP=1 -tA "$@"; }
  sql -d postgres -c "CREATE ROLE c10k LOGIN PASSWORD 'c10k'"
  sql -d postgres -c "CREATE DATABASE c10k OWNER c10k"
  DB_URL=postgres://c10k:c10k@$DB_IP:5432/c10k
  db_query() { sql -d c10k -c "$1"; }
fi

# --- app hosts ------------------------------------------------------------------------------

SERVE_HAS_DRAIN=0
"$BIN" serve --help 2>/dev/null | grep -q -- '--drain-delay' && SERVE_HAS_DRAIN=1

start_app() { # K
  local k=$1 args
  args=(serve --bind "$(app_ip "$k"):$APP_PORT" --admin "$(app_ip "$k"):$ADMIN_PORT" --workers "$WORKERS"
    --worker-class async --data-dir "$TMP/app$k" --database "$DB_URL"
    --graceful-timeout $GRACEFUL --max-lag $MAX_LAG --flush-interval $FLUSH_INTERVAL)
  ((SERVE_HAS_DRAIN)) && args+=(--drain-delay 1)
  mkdir -p "$TMP/app$k"
  echo "--- start $(date -u +%T.%N)" >>"$TMP/app$k.log"
  # Its own session: a Ctrl-C at the terminal reaches this script, which then tears down.
  in_ns "app$k" env C10K_LOG=info C10K_ADMIN_TOKEN="$ADMIN_TOKEN" setsid "$BIN" "${args[@]}" </dev/null >>"$TMP/app$k.log" 2>&1 &
}

# The c10k master of host K: the c10k process in its namespace whose parent is not c10k.
app_master() { # K
  local pid ppid
  for pid in $(ip netns pids "$P-app$1"); do
    [[ $(ps -o comm= -p "$pid") == c10k ]] || continue
    ppid=$(ps -o ppid= -p "$pid" | tr -d ' ')
    [[ $(ps -o comm= -p "$ppid" 2>/dev/null) == c10k ]] || { echo "$pid"; return 0; }
  done
  return 1
}

# Ready: /readyz on the host's admin listener; a server without it: /ids answers (the store is
# open and its instance id leased).
app_ready() { # K
  local code
  code=$(in_ns "app$1" curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$(app_ip "$1"):$ADMIN_PORT/readyz" || true)
  case $code in
    200) return 0 ;;
    404) in_ns "app$1" curl -fs -o /dev/null -m 2 "http://$(app_ip "$1"):$APP_PORT/ids" ;;
    *) return 1 ;;
  esac
}

wait_app() { wait_for 60 "app$1" app_ready "$1" || { tail -20 "$TMP/app$1.log" >&2; exit 1; }; }

# Rows each host's journals hold that are not in the database yet (from /metrics).
backlog() { # K
  in_ns "app$1" curl -fs -m 2 -H "Authorization: Bearer $ADMIN_TOKEN" "http://$(app_ip "$1"):$ADMIN_PORT/metrics" |
    awk '/^c10k_journal_unflushed_rows /{print $2; found=1} END{if(!found) exit 1}'
}
total_backlog() {
  local k sum=0 b
  for k in $(seq 1 "$HOSTS"); do
    b=$(backlog "$k") || return 1
    sum=$((sum + ${b%.*}))
  done
  echo $sum
}

for k in $(seq 1 "$HOSTS"); do start_app "$k"; done
for k in $(seq 1 "$HOSTS"); do wait_app "$k"; done

# --- the balancer ---------------------------------------------------------------------------

NGX=$TMP/nginx
mkdir -p "$NGX"
chown nobody "$NGX"
# render_site DOWN_HOST: the site file with our hosts in its upstream (DOWN_HOST marked down).
render_site() {
  local down=${1:-0} servers="" k
  for k in $(seq 1 "$HOSTS"); do
    servers+="$(app_ip "$k"):$APP_PORT"
    ((k == down)) && servers+=" down"
    servers+=$'\n'
  done
  SERVERS=$servers LISTEN="$LB_IP:80" python3 - deploy/nginx/c10k-proxy.conf <<'PY'
import os, re, sys
path = sys.argv[1]
text = open(path).read()
up = re.search(r"upstream c10k \{.*?\n\}", text, re.S)
first = up and re.search(r"^([ \t]*)server[ \t]+\S+([^;\n]*);\n", up.group(0), re.M)
if not first:
    sys.exit(f"{path}: no `server ADDR ...;` line in an `upstream c10k {{ }}` block")
indent, params = first.group(1), first.group(2)
ours = "".join(
    f"{indent}server {line.split()[0]}{params}{' down' if line.endswith(' down') else ''};\n"
    for line in os.environ["SERVERS"].strip().split("\n")
)
# Ours where the template's first server line was; its other (and commented) examples go.
block = up.group(0).replace(first.group(0), "\0\n", 1)
block = re.sub(r"^[ \t]*#?[ \t]*server[ \t]+\S+:\d+[^;\n]*;\n", "", block, flags=re.M)
text = text.replace(up.group(0), block.replace("\0\n", ours))
text, n = re.subn(r"^([ \t]*)listen[ \t]+80;", r"\g<1>listen " + os.environ["LISTEN"] + " backlog=4096;", text, flags=re.M)
if n != 1:
    sys.exit(f"{path}: no `listen 80;` line")
sys.stdout.write(text)
PY
}
render_site >"$NGX/site.conf"
FAIL_TIMEOUT=$(grep -o 'fail_timeout=[0-9]*' "$NGX/site.conf" | head -1 | cut -d= -f2)
cat >"$NGX/nginx.conf" <<EOF
# Generated by scripts/cluster.sh around deploy/nginx/c10k-proxy.conf (site.conf).
worker_processes 1;
worker_rlimit_nofile 20000;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 9000; }
http {
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    log_format cluster '\$msec \$status \$upstream_addr \$upstream_status \$request_method';
    access_log $NGX/access.log cluster buffer=64k flush=1s;
    include $NGX/site.conf;
}
EOF
in_ns lb nginx -t -q -p "$NGX" -c "$NGX/nginx.conf" || die "nginx -t failed on the rendered site"
in_ns lb nginx -p "$NGX" -c "$NGX/nginx.conf"
wait_for 10 nginx in_ns client1 curl -fs -o /dev/null -m 2 "http://$LB_IP/ids"

set_down() { # K (0: none) — nginx reloads gracefully: requests in flight finish on old workers
  render_site "$1" >"$NGX/site.conf"
  in_ns lb nginx -t -q -p "$NGX" -c "$NGX/nginx.conf"
  kill -HUP "$(cat "$NGX/nginx.pid")"
}

# --- load -----------------------------------------------------------------------------------

# load NAME SECONDS: every client host POSTs to the balancer from the same moment (--start-at)
# at RATE/CLIENTS requests/s; prints the start time (Unix seconds).
LOAD_PIDS=()
load() {
  local name=$1 secs=$2 c at procs
  printf '{"room":"%s-%s","user":"bench","text":"hello from scripts/cluster.sh"}' "$name" "$$" >"$TMP/$name.body"
  at=$(($(date +%s) + 2))
  # One engine process holds ~19,000 connections under the 20,000-fd limit: more, more processes.
  procs=$(((CONNS + 15999) / 16000))
  LOAD_PIDS=()
  for c in $(seq 1 $CLIENTS); do
    # -n, not --duration: the run ends when every request has its answer, so each one sent
    # is counted (acknowledged, refused or failed), none abandoned in flight.
    in_ns client$c "$BIN" bench -q -r -k -l -s 10 --threads 1 --processes $procs -c "$CONNS" \
      -n $((RATE * secs / CLIENTS)) --rate "$(python3 -c "print($RATE / $CLIENTS)")" --start-at $at \
      -p "$TMP/$name.body" -T application/json --json \
      --save-bodies "$TMP/$name-c$c.ids" --hdr-out "$TMP/$name-c$c.hdr" \
      "http://$LB_IP/messages" >"$TMP/$name-c$c.json" 2>"$TMP/$name-c$c.err" &
    LOAD_PIDS+=($!)
  done
  LOAD_AT=$at
}
wait_load() {
  local pid rc=0
  for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || rc=$?; done
  ((rc == 0)) || { cat "$TMP"/*-c*.err >&2; die "c10k bench failed ($rc)"; }
}
sleep_until() { # UNIX_SECONDS (fractions allowed)
  local d
  d=$(python3 -c "import time; print(max(0.0, $1 - time.time()))")
  sleep "$d"
}

# Waits until every host's journals are flushed (bounded), then checks the room: prints
# "key=value ..." figures and returns 1 when a promise broke.
drain_and_check() { # NAME
  local name=$1 t=0 b
  while :; do
    b=$(total_backlog) || b=unknown
    [[ $b == 0 ]] && break
    ((t < 300)) || { log "$name: the backlog did not drain within 60 s ($b rows)"; break; }
    sleep 0.2
    t=$((t + 1))
  done
  db_query "SELECT id FROM c10k_messages WHERE room = '$name-$$'" >"$TMP/$name.db"
  python3 - "$TMP" "$name" "$b" "$BIN" <<'PY'
import glob, json, re, subprocess, sys
tmp, name, backlog, binary = sys.argv[1:5]
reports = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/{name}-c*.json"))]
acked = []
for f in sorted(glob.glob(f"{tmp}/{name}-c*.ids")):
    for line in open(f):
        m = re.search(r'"id":(\d+)', line)
        if m:
            acked.append(int(m.group(1)))
db = [int(x) for x in open(f"{tmp}/{name}.db").read().split()]
merged = json.loads(subprocess.run(
    [binary, "bench", "merge", "--json"] + sorted(glob.glob(f"{tmp}/{name}-c*.hdr")),
    check=True, capture_output=True, text=True).stdout)
statuses = {}
for r in reports:
    for code, n in r["status_codes"].items():
        statuses[code] = statuses.get(code, 0) + n
requests = sum(r["complete_requests"] for r in reports)
failed = sum(r["failed_requests"] for r in reports)
non2xx = requests - failed - sum(n for c, n in statuses.items() if c.startswith("2"))
seconds = max(r["time_taken_s"] for r in reports)
ackset, dbset = set(acked), set(db)
figures = {
    "requests": requests,
    "acked": len(acked),
    "rps": round(requests / seconds) if seconds else 0,
    "p50_ms": merged["p50_ms"],
    "p99_ms": merged["p99_ms"],
    "failed": failed,
    "non2xx": non2xx,
    "codes": "/".join(f"{c}:{n}" for c, n in sorted(statuses.items())) or "-",
    "dup_acked_ids": len(acked) - len(ackset),
    "lost": len(ackset - dbset),
    "db_rows": len(db),
    "db_dup_rows": len(db) - len(dbset),
    "unacked_rows": len(dbset - ackset),
    "instances": len({(i >> 12) & 1023 for i in ackset}),
    "backlog_after": backlog,
}
broken = []
if figures["dup_acked_ids"]: broken.append("an id was acknowledged twice")
if figures["lost"]: broken.append("acknowledged writes missing from the database")
if figures["db_dup_rows"]: broken.append("a row is in the database twice")
# A row nobody got a 201 for can only come from a request whose answer was lost.
if figures["unacked_rows"] > failed + non2xx: broken.append("more unacknowledged rows than failed requests (a write applied twice?)")
if backlog != "0": broken.append("the journals did not drain")
if not acked: broken.append("nothing was acknowledged")
print(" ".join(f"{k}={v}" for k, v in figures.items()))
if broken:
    print("BROKEN: " + "; ".join(broken))
    sys.exit(1)
PY
}

# Prints how many 2xx answers each host gave after UNIX_SECONDS (nginx access log).
per_host_since() { # UNIX_SECONDS
  sleep 1.2 # the access log's flush=1s
  awk -v since="$1" '$1 >= since && $2 ~ /^2/ {n[$3]++} END {for (h in n) printf "%s:%d ", h, n[h]}' "$NGX/access.log"
}

# --- scenarios ------------------------------------------------------------------------------

mkdir -p "$(dirname "$OUT")"
RESULT=0
report() { # NAME LINE OK
  local line="$1: hosts=$HOSTS db=$DB $2"
  echo "$line"
  echo "$(date -u +%FT%TZ) $line" >>"$OUT"
  [[ $3 == ok ]] || RESULT=1
}

steady() {
  local out ok=ok
  load steady 12
  wait_load
  out=$(drain_and_check steady) || ok=broken
  # Under steady load nothing may fail at all.
  [[ $out =~ failed=0\ non2xx=0 ]] || { ok=broken; out+=" BROKEN: requests failed under steady load"; }
  report steady "$out" $ok
}

kill_host() {
  local out ok=ok victim=1 killed_at restarted_at after replayed
  load kill 24
  sleep_until $((LOAD_AT + 6))
  killed_at=$(date +%s.%N)
  # The whole host dies at once: every process in its namespace, no chance to flush or answer.
  kill -9 $(ip netns pids $P-app$victim)
  sleep 6
  start_app $victim
  wait_app $victim
  restarted_at=$(date +%s.%N)
  wait_load
  # What the restarted host found in its journals (each worker replays when it opens its
  # store): rows acknowledged before the kill, never flushed.
  replayed=$(
    awk '/^--- start/{n=0} /replaying unflushed journal rows/{if (match($0, /rows[=":]+[0-9]+/)) {s=substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", s); n+=s}} END{print n+0}' "$TMP/app$victim.log"
  )
  after=$(per_host_since "$restarted_at")
  out=$(drain_and_check kill) || ok=broken
  # Only requests in flight on the killed host may fail: at most one per connection.
  local failures
  failures=$(python3 -c "import re,sys; f=dict(re.findall(r'(\w+)=(\S+)', sys.argv[1])); print(int(f['failed'])+int(f['non2xx']))" "$out")
  ((failures <= CONNS * CLIENTS)) || { ok=broken; out+=" BROKEN: $failures client failures, more than the requests in flight"; }
  [[ $after == *"$(app_ip $victim):$APP_PORT:"* ]] || { ok=broken; out+=" BROKEN: the restarted host got no traffic back"; }
  report kill "$out replayed=$replayed down_s=$(python3 -c "print(round($restarted_at - $killed_at, 1))") after_restart=[${after% }]" $ok
}

db_cut() {
  local out ok=ok peak=0 b t
  load dbcut 26
  sleep_until $((LOAD_AT + 5))
  ip -n $P-sw link set h-db down
  for t in $(seq 1 20); do
    sleep 0.5
    b=$(total_backlog || echo 0)
    ((b > peak)) && peak=$b
  done
  ip -n $P-sw link set h-db up
  wait_load
  out=$(drain_and_check dbcut) || ok=broken
  # The rate keeps every worker's backlog far below --max-lag: no 503, no failure.
  [[ $out =~ failed=0\ non2xx=0 ]] || { ok=broken; out+=" BROKEN: writes refused below --max-lag"; }
  ((peak > 0)) || { ok=broken; out+=" BROKEN: no backlog while the database was away (was it cut?)"; }
  report db-cut "$out cut_s=10 peak_backlog=$peak max_lag_per_worker=$MAX_LAG" $ok
}

rolling() {
  local out ok=ok k
  load rolling $((8 * HOSTS + 4))
  sleep_until $((LOAD_AT + 2))
  for k in $(seq 1 "$HOSTS"); do
    # Stop the host (SIGTERM: drain, close the listener, finish requests in flight, flush the
    # journals), start the new one on the same data dir, wait for /readyz, next host.
    if ((ROLLING_LB_DOWN)); then
      set_down "$k"
      sleep 1
    fi
    kill -TERM "$(app_master "$k")"
    wait_for $((GRACEFUL + 15)) "app$k's stop" sh -c "[ -z \"\$(ip netns pids $P-app$k)\" ]"
    start_app "$k"
    wait_app "$k"
    if ((ROLLING_LB_DOWN)); then
      set_down 0
      sleep 1
    else
      # nginx still counts the host failed for fail_timeout after its refused connects: the
      # next host may stop only once this one is back in the rotation.
      sleep $((FAIL_TIMEOUT + 1))
    fi
  done
  wait_load
  out=$(drain_and_check rolling) || ok=broken
  [[ $out =~ failed=0\ non2xx=0 ]] || { ok=broken; out+=" BROKEN: requests failed during the rolling restart"; }
  report rolling "$out" $ok
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    steady) steady ;;
    kill) kill_host ;;
    db-cut) db_cut ;;
    rolling) rolling ;;
  esac
done
log "figures appended to $OUT"
exit $RESULT
