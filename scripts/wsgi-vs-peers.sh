#!/usr/bin/env bash
# Python WSGI hosting: c10k against Granian, gunicorn (gthread) and uWSGI, same machine, same run.
#
# Apps (crates/wsgi/tests/apps): a bare WSGI hello (`probe:hello`, 13 bytes) and Flask hello
# (`flask_app:app`, GET /hello). Each server runs 1 worker process pinned to cpu 0; wrk -t1 -c50 is
# pinned to cpu 1. The in-process limit is the same app called in a plain Python loop (building a
# fresh environ each call, consuming and closing the body) pinned to cpu 0: what a server with zero
# overhead would reach. Prints requests/s, the ratios the goals name, and each figure as a share of
# its limit. c10k-async-normal is c10k-async with --scheduling normal (the kernel's default policy
# instead of SCHED_BATCH), to show what that default is worth; it is left out of the ratios.
# granian is Granian as the goal names it (`granian --interface wsgi`, its defaults); granian-bt1 is
# Granian given one Python thread (`--blocking-threads 1`), as c10k gets `--threads 1`: its tuned
# configuration for this test, so the ratio against it is shown too.
#
# The ceiling: c10k-rust is the same c10k server (async, 1 worker) answering its built-in Rust hello
# at `/`, no Python at all: what the sockets, parsing and answering cost on this machine (the
# server floor; nginx's static hello measures the same, see scripts/serve-vs-nginx.sh). A WSGI
# server cannot beat floor + app: the ceiling is 1 / (1/floor + 1/limit) requests/s, and the
# largest lead any server can have over a peer is ceiling / peer. Measured in the bare pass only
# and used for both apps.
# Ends with issue 13's goals (bare: ≥ 1.5× Granian, ≥ 3× gunicorn gthread; Flask: ≥ 1.2× Granian,
# aiming at ≥ 75 % of the in-process limit), each judged on the medians with the same-round ratios
# beside it. Writes runs/<date>-wsgi/{raw.csv,results.md} (or OUT=DIR).
#
# Usage: scripts/wsgi-vs-peers.sh [SECONDS=5] [CONNECTIONS=50] [REPEATS=1]
# The venv (flask, granian, gunicorn, uwsgi) is $C10K_TEST_VENV, else made by python-venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-5}
CONNS=${2:-50}
REPEATS=${3:-1}
SRV_CPU=${SRV_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
APPS=$PWD/crates/wsgi/tests/apps

# shellcheck source=scripts/lib-peers.sh
source scripts/lib-peers.sh
peers_need wrk taskset curl
peers_venv granian gunicorn uwsgi
peers_build

OUT=${OUT:-runs/$(date -u +%Y-%m-%d)-wsgi}
mkdir -p "$OUT"

# server NAME APP PORT: the command line of each server for app module APP.
server_cmd() {
  local name=$1 app=$2 port=$3
  case $name in
    c10k-gthread) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers 1 -k gthread --threads 1 --venv $VENV --chdir $APPS --log-level warn $app" ;;
    c10k-async) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers 1 -k async --threads 1 --venv $VENV --chdir $APPS --log-level warn $app" ;;
    # The same with the kernel's default scheduling, to show what --scheduling batch is worth.
    c10k-async-normal) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers 1 -k async --threads 1 --scheduling normal --venv $VENV --chdir $APPS --log-level warn $app" ;;
    # The server floor: the built-in Rust app, no Python (see the header).
    c10k-rust) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers 1 -k async --log-level warn" ;;
    c10k-sync) echo "$C10K serve --bind 127.0.0.1:$port --admin off --workers 1 -k sync --venv $VENV --chdir $APPS --log-level warn $app" ;;
    granian) echo "$VENV/bin/granian --interface wsgi --host 127.0.0.1 --port $port --workers 1 --working-dir $APPS --log-level warning $app" ;;
    # Granian tuned like c10k's --threads 1: one blocking (Python) thread instead of its WSGI default
    # of backpressure/2 (512 with the default backlog), so its threads do not contend for the GIL.
    granian-bt1) echo "$VENV/bin/granian --interface wsgi --host 127.0.0.1 --port $port --workers 1 --blocking-threads 1 --working-dir $APPS --log-level warning $app" ;;
    gunicorn-gthread) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers 1 -k gthread --threads 4 --chdir $APPS --log-level warning $app" ;;
    uwsgi) echo "$VENV/bin/uwsgi --http-socket 127.0.0.1:$port --processes 1 --threads 1 --disable-logging --die-on-term --chdir $APPS --module $app --virtualenv $VENV" ;;
  esac
}

SERVERS=(c10k-gthread c10k-async c10k-async-normal c10k-sync granian granian-bt1 gunicorn-gthread uwsgi)
echo "app,server,round,rps,errors" >"$OUT/raw.csv"
measure() { # APPNAME MODULE PATH [EXTRA-SERVER...]
  local appname=$1 module=$2
  PATH_=$3
  shift 3
  for r in $(seq "$REPEATS"); do
    for s in "${SERVERS[@]}" "$@"; do
      local port path=$PATH_; port=$(free_port)
      [[ $s == c10k-rust ]] && path=/
      # shellcheck disable=SC2046
      if ! start "$s" "$port" "$SRV_CPU" "$path" $(server_cmd "$s" "$module" "$port"); then
        echo "$appname,$s,$r,0,start failed" >>"$OUT/raw.csv"; stop; continue
      fi
      taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$port$path" >"$TMP/wrk" 2>&1 || true
      local rps errors
      rps=$(wrk_rps "$TMP/wrk")
      errors=$(wrk_errors "$TMP/wrk")
      echo "$appname,$s,$r,${rps:-0},$errors" >>"$OUT/raw.csv"
      echo "$appname $s: ${rps:-0} req/s, $errors errors" >&2
      stop
    done
  done
}
measure bare probe:hello / c10k-rust
measure flask flask_app:app /hello

# The in-process limit: the app called in a loop, pinned like the servers.
limit() { # MODULE ATTR PATH
  taskset -c "$SRV_CPU" "$VENV/bin/python" - "$APPS" "$1" "$2" "$3" "$SECS" <<'EOF'
import importlib, io, sys, time
sys.path.insert(0, sys.argv[1]); import os; os.chdir(sys.argv[1])
app = getattr(importlib.import_module(sys.argv[2]), sys.argv[3])
path, secs = sys.argv[4], float(sys.argv[5])
def start_response(status, headers, exc_info=None):
    return lambda data: None
def call():
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000", "HTTP_HOST": "127.0.0.1:8000",
               "HTTP_USER_AGENT": "wrk", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
               "wsgi.multiprocess": False, "wsgi.run_once": False}
    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        if hasattr(body, "close"):
            body.close()
for _ in range(2000):
    call()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < secs:
    for _ in range(200):
        call()
    n += 200
print("%.0f" % (n / (time.perf_counter() - t0)))
EOF
}
BARE_LIMIT=$(limit probe hello /)
FLASK_LIMIT=$(limit flask_app app /hello)
echo "bare,in-process-limit,0,$BARE_LIMIT,0" >>"$OUT/raw.csv"
echo "flask,in-process-limit,0,$FLASK_LIMIT,0" >>"$OUT/raw.csv"

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (with uncommitted changes)')"
MACHINE="$(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
python3 - "$OUT/raw.csv" "$SECS" "$CONNS" "$REPEATS" "$COMMIT" "$MACHINE" >"$OUT/results.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fig = {}
for r in rows:
    fig.setdefault((r["app"], r["server"]), []).append(float(r["rps"]))
med = {k: statistics.median(v) for k, v in fig.items()}
print(f"# WSGI hosting vs peers (1 worker on cpu 0; wrk -t1 -c{sys.argv[3]} -d{sys.argv[2]}s on cpu 1)\n")
print(f"Command: `scripts/wsgi-vs-peers.sh {sys.argv[2]} {sys.argv[3]} {sys.argv[4]}`  ")
print(f"Commit: {sys.argv[5]}  ")
print(f"Machine: {sys.argv[6]}\n")
for app in ("bare", "flask"):
    limit = med.get((app, "in-process-limit"), 0)
    print(f"## {app} hello (in-process limit {limit:,.0f} calls/s)\n")
    print("| server | req/s | share of limit |")
    print("|---|---:|---:|")
    for (a, s), v in sorted(med.items(), key=lambda kv: -kv[1]):
        if a == app and s not in ("in-process-limit", "c10k-rust"):
            share = f"{100 * v / limit:.0f} %" if limit else "-"
            print(f"| {s} | {v:,.0f} | {share} |")
    # c10k as shipped: the --scheduling normal row is there to show what the default is worth.
    shipped = lambda s: s.startswith("c10k") and not s.endswith("-normal") and s != "c10k-rust"
    best = max((v for (a, s), v in med.items() if a == app and shipped(s)), default=0)
    best_name = next((s for (a, s), v in med.items() if a == app and shipped(s) and v == best), "c10k")
    normal = med.get((app, "c10k-async-normal"), 0)
    if normal:
        print(f"\nc10k-async (SCHED_BATCH, the default) / c10k-async-normal: **{med.get((app, 'c10k-async'), 0) / normal:.2f}x**", end="")
    for peer in ("granian", "granian-bt1", "gunicorn-gthread", "uwsgi"):
        p = med.get((app, peer), 0)
        if p:
            print(f"\n{best_name} / {peer}: **{best / p:.2f}x**", end="")
    floor = med.get(("bare", "c10k-rust"), 0)
    if floor and limit:
        ceiling = 1 / (1 / floor + 1 / limit)
        c10k = med.get((app, "c10k-async"), 0)
        print(f"\n\nCeiling: the server floor (c10k's built-in Rust hello, no Python: {floor:,.0f} req/s) "
              f"plus the app's in-process cost: **{ceiling:,.0f} req/s**; c10k-async reaches "
              f"**{100 * c10k / ceiling:.0f} %** of it.", end="")
        g = med.get((app, "granian"), 0)
        if g:
            print(f" The largest lead any server could have over granian here: **{ceiling / g:.2f}x**.", end="")
    print("\n")

# Issue 13's goals, judged on the medians, with the same-round ratios beside them (each round runs
# every server once, in the same order), so a verdict near its line shows how the rounds fell.
by_round = {}
for r in rows:
    by_round.setdefault((r["app"], r["server"]), {})[r["round"]] = float(r["rps"])
GOALS = {"bare": [("granian", 1.5), ("gunicorn-gthread", 3.0)], "flask": [("granian", 1.2)]}
print("## Goals (issue 13)\n")
for app, goals in GOALS.items():
    shipped = lambda s: s.startswith("c10k") and not s.endswith("-normal") and s != "c10k-rust"
    best = max((v for (a, s), v in med.items() if a == app and shipped(s)), default=0)
    name = next((s for (a, s), v in med.items() if a == app and shipped(s) and v == best), "c10k")
    for peer, goal in goals:
        p = med.get((app, peer), 0)
        if not (p and best):
            print(f"- {app}: {peer} not measured")
            continue
        ours, theirs = by_round.get((app, name), {}), by_round.get((app, peer), {})
        rounds = sorted(k for k in ours if k in theirs and theirs[k] > 0)
        ratios = [ours[k] / theirs[k] for k in rounds]
        ahead = sum(x >= goal for x in ratios)
        spread = f"round ratios {min(ratios):.2f}–{max(ratios):.2f}, at or above {goal}× in {ahead} of {len(ratios)}" if ratios else "no complete round"
        verdict = "met" if best / p >= goal else "NOT met"
        print(f"- {app} hello: {name} / {peer} = {best / p:.2f}× (goal ≥ {goal}×; {spread}): **{verdict}**")
limit = med.get(("flask", "in-process-limit"), 0)
best = max((v for (a, s), v in med.items() if a == "flask" and s.startswith("c10k") and not s.endswith("-normal")), default=0)
if limit and best:
    share = best / limit
    print(f"- flask hello: c10k at {100 * share:.0f} % of the in-process limit (aim ≥ 75 %): **{'met' if share >= 0.75 else 'NOT met'}**")
print()
EOF
cat "$OUT/results.md"
