#!/usr/bin/env bash
# `--worker-class gevent`: c10k hosting the seed's Flask app in greenlets, against gunicorn gevent
# and uWSGI gevent on the same app, same machine, same run, in alternating rounds (each round
# starts with the next server, so no server always runs first or last on a drifting machine).
# Prints medians per server and c10k's ratios against each peer.
#
#   1. seed: the seed's experiment, `ab -n 1000 -c 100` on `/?delay=0.1` (time.sleep(0.1) in the
#      view), 4 worker processes each, after a 200-request warm-up (goal: c10k >= gunicorn gevent
#      and uWSGI gevent). The ceiling is 100 / 0.1 s = 1,000 req/s.
#   2. hello: Flask hello (`/hello`), 1 worker pinned to cpu $SRV_CPU, `wrk -t1 -c50` pinned to
#      cpu $GEN_CPU (goal: c10k >= 1.5x gunicorn gevent).
#   3. Only with C10K_RUN=1: C10K with a Python app, 10,000 keep-alive connections to `/?delay=1`
#      (time.sleep(1)), `wrk -t2 -c10000 -d30 --timeout 5s`, 4 workers, c10k and gunicorn gevent
#      once each; req/s, errors and the peak memory of all the server's processes, sampled every
#      2 s: summed RSS (the goal's figure) and summed PSS (shared pages counted once). Goal:
#      >= 9,000 req/s, 0 errors, <= 400 MB. The fd limit is raised to the hard limit (wrk needs
#      one fd per connection); the kernel's listen queue cap (somaxconn) is printed beside.
#
# Usage: scripts/gevent-vs-peers.sh [SECONDS=5] [REPEATS=3]     (SECONDS: wrk duration of part 2)
# Apps: crates/wsgi/tests/apps/flask_app.py. The venv (flask, gevent, gunicorn, uwsgi) is
# $C10K_TEST_VENV, else made by python-venv.sh. Loopback only. Writes
# runs/<date>-gevent/{raw.csv,results.md} (or OUT=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-5}
REPEATS=${2:-3}
SRV_CPU=${SRV_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
APPS=$PWD/crates/wsgi/tests/apps

# shellcheck source=scripts/lib-peers.sh
source scripts/lib-peers.sh
peers_need ab wrk taskset curl
peers_venv gunicorn uwsgi
"$VENV/bin/python" -c 'import gevent' || { echo "no gevent in $VENV" >&2; exit 1; }
peers_build

OUT=${OUT:-runs/$(date -u +%Y-%m-%d)-gevent}
mkdir -p "$OUT"

# server_cmd NAME PORT WORKERS CONNECTIONS: each server's command line, gevent class, the Flask app.
server_cmd() {
  local name=$1 port=$2 w=$3 conns=$4
  case $name in
    c10k-gevent) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers $w -k gevent --worker-connections $conns --backlog 16384 --venv $VENV --chdir $APPS --log-level warn flask_app:app" ;;
    gunicorn-gevent) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $w -k gevent --worker-connections $conns --backlog 16384 --chdir $APPS --log-level warning flask_app:app" ;;
    uwsgi-gevent) echo "$VENV/bin/uwsgi --http-socket 127.0.0.1:$port --processes $w --gevent $conns --gevent-monkey-patch --listen 1024 --disable-logging --die-on-term --chdir $APPS --module flask_app:app --virtualenv $VENV" ;;
  esac
}

# rotated ROUND NAME...: the names, starting at position ROUND (mod their count).
rotated() {
  local r=$1; shift
  local n=$# i
  local all=("$@")
  for ((i = 0; i < n; i++)); do echo "${all[$(((r + i) % n))]}"; done
}

echo "test,server,round,rps,errors,rss_mb,pss_mb" >"$OUT/raw.csv"
SERVERS=(c10k-gevent gunicorn-gevent uwsgi-gevent)

for r in $(seq "$REPEATS"); do
  # 1. The seed's experiment.
  for s in $(rotated "$r" "${SERVERS[@]}"); do
    port=$(free_port)
    # shellcheck disable=SC2046
    if ! start "$s" "$port" 0-1 /hello $(server_cmd "$s" "$port" 4 1000); then
      echo "seed,$s,$r,0,start failed,," >>"$OUT/raw.csv"; stop; continue
    fi
    ab -q -n 200 -c 50 "http://127.0.0.1:$port/hello" >/dev/null 2>&1 || true
    ab -q -n 1000 -c 100 "http://127.0.0.1:$port/?delay=0.1" >"$TMP/ab" 2>&1 || true
    rps=$(awk '/^Requests per second:/ {print $4}' "$TMP/ab")
    failed=$(awk '/^Failed requests:/ {f = $3} /^Non-2xx responses:/ {n = $3} END {print f + n}' "$TMP/ab")
    echo "seed,$s,$r,${rps:-0},$failed,$(rss_mb),$(pss_mb)" >>"$OUT/raw.csv"
    echo "round $r seed (ab -n1000 -c100 delay=0.1, 4 workers) $s: ${rps:-0} req/s, $failed failed" >&2
    stop
  done

  # 2. Flask hello, 1 worker pinned.
  for s in $(rotated "$r" "${SERVERS[@]}"); do
    port=$(free_port)
    # shellcheck disable=SC2046
    if ! start "$s" "$port" "$SRV_CPU" /hello $(server_cmd "$s" "$port" 1 1000); then
      echo "hello,$s,$r,0,start failed,," >>"$OUT/raw.csv"; stop; continue
    fi
    taskset -c "$GEN_CPU" wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$port/hello" >"$TMP/wrk" 2>&1 || true
    rps=$(wrk_rps "$TMP/wrk")
    errors=$(wrk_errors "$TMP/wrk")
    echo "hello,$s,$r,${rps:-0},$errors,$(rss_mb),$(pss_mb)" >>"$OUT/raw.csv"
    echo "round $r Flask hello (wrk -c50, 1 worker pinned) $s: ${rps:-0} req/s, $errors errors" >&2
    stop
  done
done

# 3. C10K with a Python app (long: opt in).
if [[ ${C10K_RUN:-0} == 1 ]]; then
  ulimit -n "$(ulimit -Hn)"
  if (($(ulimit -n) < 10100)); then
    echo "C10K part: the fd limit is $(ulimit -n) (hard limit); wrk needs 10,000 + a few" >&2
    exit 1
  fi
  echo "C10K part: fd limit $(ulimit -n), somaxconn $(cat /proc/sys/net/core/somaxconn)," \
    "tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)" >&2
  for s in c10k-gevent gunicorn-gevent; do
    port=$(free_port)
    # shellcheck disable=SC2046
    if ! start "$s" "$port" 0-1 /hello $(server_cmd "$s" "$port" 4 12000); then
      echo "c10k,$s,1,0,start failed,," >>"$OUT/raw.csv"; stop; continue
    fi
    wrk -t2 -c10000 -d30 --timeout 5s "http://127.0.0.1:$port/?delay=1" >"$TMP/wrk" 2>&1 &
    WRK=$!
    rss=0 pss=0
    while kill -0 "$WRK" 2>/dev/null; do
      now=$(rss_mb); ((now > rss)) && rss=$now
      now=$(pss_mb); ((now > pss)) && pss=$now
      sleep 2
    done
    wait "$WRK" || true
    rps=$(wrk_rps "$TMP/wrk")
    errors=$(wrk_errors "$TMP/wrk")
    echo "c10k,$s,1,${rps:-0},$errors,$rss,$pss" >>"$OUT/raw.csv"
    echo "C10K (10,000 conns, delay=1, 4 workers) $s: ${rps:-0} req/s, $errors errors ($(wrk_error_text "$TMP/wrk")), peak RSS $rss MB, PSS $pss MB" >&2
    sed -n '/Latency/,/Req\/Sec/p' "$TMP/wrk" >&2
    stop
  done
fi

python3 - "$OUT/raw.csv" "$SECS" "$REPEATS" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/results.md" <<'EOF'
import csv, statistics, sys, time
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["errors"] != "start failed"]
secs, repeats, load = sys.argv[2], sys.argv[3], sys.argv[4]
fig = {}
for r in rows:
    fig.setdefault((r["test"], r["server"]), []).append(r)
def med(test, server, col="rps"):
    rs = fig.get((test, server))
    return statistics.median(float(r[col] or 0) for r in rs) if rs else None
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"
print(f"# gevent worker class vs peers ({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, load at the end {load})\n")
print(f"Medians of {repeats} alternating rounds (req/s; errors summed over the rounds).\n")
print("| test | c10k gevent | gunicorn gevent | uWSGI gevent | c10k / gunicorn | c10k / uWSGI | goal |")
print("|---|---:|---:|---:|---:|---:|---|")
names = {
    "seed": "seed: ab -n1000 -c100, sleep(0.1), 4 workers",
    "hello": f"Flask hello, wrk -t1 -c50 -d{secs}s, 1 worker pinned",
    "c10k": "C10K: wrk -t2 -c10000 -d30 --timeout 5s, sleep(1), 4 workers (1 round)",
}
for test in ("seed", "hello", "c10k"):
    c, g, u = (med(test, s) for s in ("c10k-gevent", "gunicorn-gevent", "uwsgi-gevent"))
    if c is None and g is None:
        continue
    errs = {s: sum(int(float(r["errors"] or 0)) for r in fig.get((test, s), [])) for s in ("c10k-gevent", "gunicorn-gevent", "uwsgi-gevent")}
    if test == "seed":
        ok = c is not None and c >= (g or 0) and c >= (u or 0)
        goal = ">= both peers: " + ("met" if ok else "NOT met")
    elif test == "hello":
        ok = c is not None and g and c >= 1.5 * g
        goal = ">= 1.5x gunicorn: " + ("met" if ok else "NOT met")
    else:
        rss = med(test, "c10k-gevent", "rss_mb") or 0
        ok = c is not None and c >= 9000 and errs["c10k-gevent"] == 0 and rss <= 400
        goal = ">= 9,000 req/s, 0 errors, <= 400 MB: " + ("met" if ok else "NOT met")
    cell = lambda v, s: "" if v is None else f"{v:,.0f}" + (f" ({errs[s]} err)" if errs[s] else "")
    print(f"| {names[test]} | {cell(c, 'c10k-gevent')} | {cell(g, 'gunicorn-gevent')} | {cell(u, 'uwsgi-gevent')} | {ratio(c, g)} | {ratio(c, u)} | {goal} |")
if fig.get(("c10k", "c10k-gevent")) or fig.get(("c10k", "gunicorn-gevent")):
    print("\nC10K memory, all processes of the server (peak MB): " + ", ".join(
        f"{s} RSS {med('c10k', s, 'rss_mb'):.0f} / PSS {med('c10k', s, 'pss_mb'):.0f}"
        for s in ("c10k-gevent", "gunicorn-gevent") if fig.get(("c10k", s))))
print(f"\nRaw figures (every round, errors, RSS and PSS in MB): {sys.argv[1]}")
EOF
cat "$OUT/results.md"
