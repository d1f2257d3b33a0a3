#!/usr/bin/env bash
# `--worker-class gevent`: c10k hosting the seed's Flask app in greenlets, against gunicorn gevent
# and uWSGI gevent on the same app, same machine, same run. Prints each figure and c10k's ratio.
#
#   1. The seed's experiment: `ab -n 1000 -c 100` on `/?delay=0.1` (time.sleep(0.1) in the view),
#      4 worker processes each (goal: c10k >= gunicorn gevent and uWSGI gevent).
#   2. Flask hello (`/hello`): 1 worker pinned to cpu 0, `wrk -t1 -c50` pinned to cpu 1
#      (goal: c10k >= 1.5x gunicorn gevent).
#   3. Only with C10K_RUN=1: C10K with a Python app: 10,000 keep-alive connections to
#      `/?delay=1`, `wrk -t2 -c10000 -d30 --timeout 5s`, 4 workers; req/s, errors and the
#      servers' total RSS (goal: >= 9,000 req/s, 0 errors, <= 400 MB).
#
# Usage: scripts/gevent-vs-peers.sh [SECONDS=5]        (wrk duration of part 2)
# Apps: crates/wsgi/tests/apps/flask_app.py. The venv (flask, gevent, gunicorn, uwsgi) is
# $C10K_TEST_VENV, else made by python-venv.sh. Writes runs/<date>-gevent/{raw.csv,results.md}.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-5}
SRV_CPU=${SRV_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
APPS=$PWD/crates/wsgi/tests/apps

for tool in ab wrk taskset curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install apache2-utils wrk curl util-linux)" >&2; exit 1; }
done
if [[ -z ${C10K_TEST_VENV:-} ]]; then
  eval "$(bash scripts/python-venv.sh)"
fi
VENV=$C10K_TEST_VENV
for b in gunicorn uwsgi; do
  [[ -x $VENV/bin/$b ]] || { echo "missing $VENV/bin/$b (scripts/python-venv.sh installs it)" >&2; exit 1; }
done
"$VENV/bin/python" -c 'import gevent' || { echo "no gevent in $VENV" >&2; exit 1; }

cargo build --release -p c10k >&2
C10K=$PWD/target/release/c10k

OUT=runs/$(date -u +%Y-%m-%d)-gevent
mkdir -p "$OUT"
TMP=$(mktemp -d)
SERVER=
cleanup() {
  if [[ -n $SERVER ]]; then kill -TERM -- "-$SERVER" 2>/dev/null || kill "$SERVER" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PORT CPUS CMD...: the server in its own process group, pinned to CPUS.
start() {
  local name=$1 port=$2 cpus=$3; shift 3
  setsid taskset -c "$cpus" "$@" >"$TMP/$name.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 150); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/hello" && return 0
    sleep 0.1
  done
  echo "$name did not start:" >&2
  tail -20 "$TMP/$name.log" >&2
  return 1
}
stop() {
  kill -TERM -- "-$SERVER" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}
# Total RSS in MB of the server's process group.
rss_mb() { ps -o rss= -g "$SERVER" 2>/dev/null | awk '{s+=$1} END {printf "%.0f", s/1024}'; }

# server_cmd NAME PORT WORKERS CONNECTIONS
server_cmd() {
  local name=$1 port=$2 w=$3 conns=$4
  case $name in
    c10k-gevent) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers $w -k gevent --worker-connections $conns --backlog 16384 --venv $VENV --chdir $APPS --log-level warn flask_app:app" ;;
    gunicorn-gevent) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $w -k gevent --worker-connections $conns --backlog 16384 --chdir $APPS --log-level warning flask_app:app" ;;
    uwsgi-gevent) echo "$VENV/bin/uwsgi --http-socket 127.0.0.1:$port --processes $w --gevent $conns --gevent-monkey-patch --listen 1024 --disable-logging --die-on-term --chdir $APPS --module flask_app:app --virtualenv $VENV" ;;
  esac
}

SERVERS=(c10k-gevent gunicorn-gevent uwsgi-gevent)
echo "test,server,rps,errors,rss_mb" >"$OUT/raw.csv"
declare -A RPS

# 1. The seed's experiment.
for s in "${SERVERS[@]}"; do
  port=$(free_port)
  # shellcheck disable=SC2046
  if ! start "$s" "$port" 0-1 $(server_cmd "$s" "$port" 4 1000); then
    echo "seed,$s,0,start failed," >>"$OUT/raw.csv"; stop; continue
  fi
  ab -q -n 1000 -c 100 "http://127.0.0.1:$port/?delay=0.1" >"$TMP/ab" 2>&1 || true
  rps=$(awk '/^Requests per second:/ {print $4}' "$TMP/ab")
  failed=$(awk '/^Failed requests:/ {print $3}' "$TMP/ab")
  RPS[seed,$s]=${rps:-0}
  echo "seed,$s,${rps:-0},${failed:-?},$(rss_mb)" >>"$OUT/raw.csv"
  echo "seed (ab -n1000 -c100 delay=0.1, 4 workers) $s: ${rps:-0} req/s, failed ${failed:-?}" >&2
  stop
done

# 2. Flask hello, 1 worker pinned.
for s in c10k-gevent gunicorn-gevent; do
  port=$(free_port)
  # shellcheck disable=SC2046
  if ! start "$s" "$port" "$SRV_CPU" $(server_cmd "$s" "$port" 1 1000); then
    echo "hello,$s,0,start failed," >>"$OUT/raw.csv"; stop; continue
  fi
  taskset -c "$GEN_CPU" wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$port/hello" >"$TMP/wrk" 2>&1 || true
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk")
  errors=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$TMP/wrk")
  RPS[hello,$s]=${rps:-0}
  echo "hello,$s,${rps:-0},${errors:-0},$(rss_mb)" >>"$OUT/raw.csv"
  echo "Flask hello (wrk -c50, 1 worker pinned) $s: ${rps:-0} req/s ${errors}" >&2
  stop
done

# 3. C10K with a Python app (long: opt in).
if [[ ${C10K_RUN:-0} == 1 ]]; then
  ulimit -n 65536 2>/dev/null || true
  for s in c10k-gevent gunicorn-gevent; do
    port=$(free_port)
    # shellcheck disable=SC2046
    if ! start "$s" "$port" 0-1 $(server_cmd "$s" "$port" 4 12000); then
      echo "c10k,$s,0,start failed," >>"$OUT/raw.csv"; stop; continue
    fi
    wrk -t2 -c10000 -d30 --timeout 5s "http://127.0.0.1:$port/?delay=1" >"$TMP/wrk" 2>&1 &
    WRK=$!
    sleep 25
    rss=$(rss_mb)
    wait "$WRK" || true
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk")
    errors=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$TMP/wrk")
    RPS[c10k,$s]=${rps:-0}
    echo "c10k,$s,${rps:-0},${errors:-0},$rss" >>"$OUT/raw.csv"
    echo "C10K (10,000 conns, delay=1, 4 workers) $s: ${rps:-0} req/s, ${errors:-0 errors}, ${rss} MB" >&2
    stop
  done
fi

ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
  echo "# gevent worker class vs peers ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "| test | c10k gevent | gunicorn gevent | uWSGI gevent | c10k / gunicorn | c10k / uWSGI |"
  echo "|---|---|---|---|---|---|"
  echo "| seed: ab -n1000 -c100, sleep(0.1), 4 workers | ${RPS[seed,c10k-gevent]:-} | ${RPS[seed,gunicorn-gevent]:-} | ${RPS[seed,uwsgi-gevent]:-} | $(ratio "${RPS[seed,c10k-gevent]:-}" "${RPS[seed,gunicorn-gevent]:-}") | $(ratio "${RPS[seed,c10k-gevent]:-}" "${RPS[seed,uwsgi-gevent]:-}") |"
  echo "| Flask hello, wrk -c50, 1 worker pinned | ${RPS[hello,c10k-gevent]:-} | ${RPS[hello,gunicorn-gevent]:-} | | $(ratio "${RPS[hello,c10k-gevent]:-}" "${RPS[hello,gunicorn-gevent]:-}") | |"
  if [[ ${C10K_RUN:-0} == 1 ]]; then
    echo "| C10K: 10,000 conns, sleep(1), 4 workers | ${RPS[c10k,c10k-gevent]:-} | ${RPS[c10k,gunicorn-gevent]:-} | | $(ratio "${RPS[c10k,c10k-gevent]:-}" "${RPS[c10k,gunicorn-gevent]:-}") | |"
  fi
  echo
  echo "Raw figures (errors, RSS of all processes in MB): $OUT/raw.csv"
} | tee "$OUT/results.md"
