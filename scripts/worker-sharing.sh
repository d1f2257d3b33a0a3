#!/usr/bin/env bash
# What a forked master's pages are worth to worker processes that share one CPU: c10k, whose
# Python workers are forked by a zygote that has started the interpreter (crates/serve/src/
# zygote.rs; before 8aa9b76 each worker executed the binary again), against uWSGI forked from its
# master, and against four uWSGI processes started on their own (nothing shared between them), same
# Flask app, same run.
#
# Why: in the seed's experiment the four workers of every server are pinned to one CPU. A CPU's
# caches are indexed by physical address, and forked workers keep sharing every page that none of
# them has written since the fork (much of what the interpreter set up before it), so what one
# worker brought into the cache is there for the next one the CPU switches to; executed workers
# share only file-backed pages. When c10k still executed its workers, they spent about a quarter
# more CPU per request than uWSGI's there (bba5235: 3,985 against 5,093 req/s), although each alone
# was as fast and ran the same Python calls. The third server, uWSGI without its fork, is the
# control: it shows what the sharing is worth on this host.
#
# Servers (each pinned to SRV_CPU, ab to GEN_CPU, rounds alternating):
#   c10k-1        c10k serve -k sync -w 1                    (one process: no sharing to lose)
#   uwsgi-1       uwsgi --master --workers 1
#   c10k-4        c10k serve -k sync -w 4
#   c10k-preload-4 c10k serve -k sync -w 4 --preload         (the zygote imports the app first)
#   uwsgi-fork-4  uwsgi --master --workers 4                 (forked after Python is set up and the
#                                                             app imported: uWSGI's default)
#   uwsgi-exec-4  4 × uwsgi --workers 1 --reuse-port         (four executed processes, one port)
# With THREADS=T, c10k runs `-k gthread --threads T` and every uWSGI `--threads T`.
# Load: ab -r -q -n N -c C '/?delay=DELAY' after WARM requests (the seed's app,
# lab/peers/flask_app.py). DELAY=0 makes the CPU the limit; the seed's own setting is
# `THREADS=50 N=1000 WARM=400 DELAY=0.1` (a sync worker would take 10 s per 100 requests).
#
# Prints and writes runs/<date>-worker-sharing/{raw.csv,results.md} (or OUT=DIR): the median
# requests/s of each server and the ratios.
#
# Usage: [ROUNDS=5] [N=20000] [WARM=2000] [C=100] [DELAY=0] [THREADS=0] [OUT=DIR]
#        scripts/worker-sharing.sh
# The venv (flask, uwsgi) is $C10K_TEST_VENV, else made by python-venv.sh; the servers are started
# and stopped by scripts/lib-peers.sh. Loopback only; about 4 minutes at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
N=${N:-20000}
C=${C:-100}
DELAY=${DELAY:-0}
WARM=${WARM:-2000}
THREADS=${THREADS:-0}
SRV_CPU=${SRV_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-runs/$(date -u +%F)-worker-sharing}
APP_DIR=$PWD/lab/peers

source scripts/lib-peers.sh
peers_need ab taskset curl ss
peers_venv uwsgi flask
peers_build

SERVERS=(c10k-1 uwsgi-1 c10k-4 c10k-preload-4 uwsgi-fork-4 uwsgi-exec-4)

# start_server NAME PORT: starts NAME (as SERVER) on 127.0.0.1:PORT.
start_server() {
  local name=$1 port=$2
  local uwsgi=("$VENV/bin/uwsgi" --http-socket "127.0.0.1:$port" --listen 1024 --die-on-term
    --disable-logging --chdir "$APP_DIR" --module flask_app:app)
  local class=(-k sync)
  if ((THREADS > 0)); then
    uwsgi+=(--threads "$THREADS")
    class=(-k gthread --threads "$THREADS")
  fi
  local c10k=("$C10K" serve "${class[@]}" --venv "$VENV" --chdir "$APP_DIR" -b "127.0.0.1:$port"
    --backlog 1024 --admin off --log-level warn flask_app:app)
  case $name in
    c10k-1) start "$name" "$port" "$SRV_CPU" / "${c10k[@]}" -w 1 ;;
    c10k-4) start "$name" "$port" "$SRV_CPU" / "${c10k[@]}" -w 4 ;;
    c10k-preload-4) start "$name" "$port" "$SRV_CPU" / "${c10k[@]}" -w 4 --preload ;;
    uwsgi-1) start "$name" "$port" "$SRV_CPU" / "${uwsgi[@]}" --master --workers 1 ;;
    uwsgi-fork-4) start "$name" "$port" "$SRV_CPU" / "${uwsgi[@]}" --master --workers 4 ;;
    uwsgi-exec-4)
      # Four processes in one process group (so stop() ends them all), each executed on its own.
      start "$name" "$port" "$SRV_CPU" / bash -c \
        'for i in 1 2 3 4; do "$@" --workers 1 --reuse-port & done; wait' _ "${uwsgi[@]}" ;;
  esac
}

mkdir -p "$OUT"
echo "round,server,rps,failed" >"$OUT/raw.csv"
url_path="/?delay=$DELAY"
for round in $(seq "$ROUNDS"); do
  for name in "${SERVERS[@]}"; do
    port=$(free_port)
    start_server "$name" "$port"
    if [[ $name == uwsgi-exec-4 ]]; then
      # All four must be listening before the load starts, or the first ones take it all.
      for _ in $(seq 100); do
        [[ $(ss -Hltn "sport = :$port" | wc -l) -ge 4 ]] && break
        sleep 0.1
      done
    fi
    taskset -c "$GEN_CPU" ab -r -q -n "$WARM" -c "$C" "http://127.0.0.1:$port$url_path" >/dev/null 2>&1
    report=$(taskset -c "$GEN_CPU" ab -r -q -n "$N" -c "$C" "http://127.0.0.1:$port$url_path" 2>&1)
    rps=$(awk '/^Requests per second:/ {print $4}' <<<"$report")
    failed=$(awk '/^Failed requests:/ {print $3}' <<<"$report")
    echo "$round,$name,${rps:-0},${failed:-?}" >>"$OUT/raw.csv"
    echo "round $round: $name ${rps:-?} req/s, ${failed:-?} failed" >&2
    stop
  done
done

commit=$(git rev-parse --short HEAD)
python3 - "$OUT/raw.csv" "$N" "$C" "$DELAY" "$ROUNDS" "$commit" "$WARM" "$THREADS" >"$OUT/results.md" <<'EOF'
import csv, statistics, sys
path, n, c, delay, rounds, commit, warm, threads = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
by = {}
for r in rows:
    by.setdefault(r["server"], []).append(float(r["rps"]))
med = {k: statistics.median(v) for k, v in by.items()}
fails = {k: sum(int(r["failed"]) for r in rows if r["server"] == k and r["failed"].isdigit()) for k in by}
print(f"# Worker processes sharing one CPU: forked against executed\n")
print(f"Command: `ROUNDS={rounds} N={n} WARM={warm} C={c} DELAY={delay} THREADS={threads} scripts/worker-sharing.sh` "
      f"(servers on one CPU, ab on the other; the seed's Flask app)  ")
print(f"Commit: {commit}\n")
print("| server | req/s per round | median | failed |")
print("|---|---|---|---|")
for k in by:
    print(f"| {k} | {', '.join(f'{x:,.0f}' for x in by[k])} | **{med[k]:,.0f}** | {fails[k]} |")
def ratio(a, b, what):
    if med.get(a) and med.get(b):
        print(f"- {a} / {b}: **{med[a] / med[b]:.2f}** — {what}")
print()
ratio("c10k-1", "uwsgi-1", "one worker each: the servers' own cost per request")
ratio("c10k-4", "uwsgi-fork-4", "four workers on one CPU: what the seed's setting sees")
ratio("c10k-preload-4", "uwsgi-fork-4", "the same, c10k with --preload: both import the app before the fork")
ratio("uwsgi-exec-4", "uwsgi-fork-4", "the same uWSGI without its fork: what the shared pages are worth")
ratio("c10k-4", "uwsgi-exec-4", "c10k (forked by its zygote since 8aa9b76) against uWSGI without its fork")
ratio("c10k-4", "c10k-1", "c10k from one worker to four on one CPU")
ratio("uwsgi-fork-4", "uwsgi-1", "uWSGI (forked) from one worker to four on one CPU")
EOF
cat "$OUT/results.md"
