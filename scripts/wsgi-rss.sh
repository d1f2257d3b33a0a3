#!/usr/bin/env bash
# Memory per worker process, c10k against gunicorn and uWSGI hosting the same Python app, same run
# (issue 13's goal: "RSS per worker ≤ gunicorn's for the same app").
#
# Apps (crates/wsgi/tests/apps): Flask (`flask_app:app`, warmed on /hello and /stream) and Django
# (`djangoproj.wsgi:application` on SQLite, warmed on / and /notes). Servers, W=4 worker processes
# each, T=4 threads where the class has threads:
#   c10k sync, thread, gthread ×T, async ×T, gevent, sync --preload, gevent --preload; gunicorn
#   sync, gthread ×T, gevent, sync --preload, gevent --preload; uWSGI W×T threads (which imports
#   the app before it forks, by default).
# Each server is started, warmed with `ab -n WARM -c 2T` on every warm-up path (so every thread of
# every worker has run requests), then for every worker process (the master's children) the script
# reads VmRSS and Threads from /proc/PID/status and Pss from /proc/PID/smaps_rollup. RSS counts
# every page the worker maps, also pages it shares with its master and siblings after a fork; PSS
# divides shared pages among the processes sharing them, so it is the fairer figure for forked
# workers (gunicorn and uWSGI fork their workers from a master that imported nothing or the app;
# c10k forks its Python workers from a zygote that has started the interpreter, and each imports
# the app after the fork; with --preload the zygote, and gunicorn's master, import the app before
# the fork). What is shared moves into the master or the zygote, so the total PSS of every
# process of the server is reported too. A c10k worker drops the page-table entries of the start-up code once
# booted (`release_startup_pages` in crates/serve/src/sys.rs), so both figures count the file
# pages that serving touches — measured after the warm-up, which faults in whatever the load
# needs. c10k's zygote is reported beside the master, not as a worker.
#
# Prints per server the median over its workers of RSS, PSS, private (anonymous) memory and
# threads, and the ratio c10k / gunicorn for each c10k class against gunicorn's class of the same
# model (sync ↔ sync, gevent ↔ gevent: both import gevent and monkey-patch before the app) and
# against gunicorn gthread (every class). Writes runs/<date>-wsgi-rss/{raw.csv,results.md}
# (or OUT=DIR).
#
# Usage: [WARM=2000] [THREADS=4] [OUT=DIR] scripts/wsgi-rss.sh
# The venv (flask, django, gunicorn, uwsgi, gevent) is $C10K_TEST_VENV, else made by python-venv.sh;
# the servers are started and stopped by scripts/lib-peers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

WARM=${WARM:-2000}
THREADS=${THREADS:-4}
WORKERS=4
SRV_CPU=${SRV_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
APPS=$PWD/crates/wsgi/tests/apps

source scripts/lib-peers.sh
peers_need ab taskset curl python3 setsid
peers_venv gunicorn uwsgi
peers_build
OUT=${OUT:-runs/$(date -u +%Y-%m-%d)-wsgi-rss}

# The Django project's SQLite database, migrated once, in the scratch directory.
export DJANGO_SQLITE=$TMP/notes.sqlite3
(cd "$APPS/djangoproj" && "$VENV/bin/python" manage.py migrate --run-syncdb -v0) >&2

# server_cmd NAME MODULE PORT CHDIR: the command line of each server.
server_cmd() {
  local name=$1 app=$2 port=$3 dir=$4
  local c10k="$C10K serve --bind 127.0.0.1:$port --admin off --workers $WORKERS --venv $VENV --chdir $dir --log-level warn"
  case $name in
    c10k-sync) echo "$c10k -k sync $app" ;;
    c10k-thread) echo "$c10k -k thread $app" ;;
    c10k-gthread) echo "$c10k -k gthread --threads $THREADS $app" ;;
    c10k-async) echo "$c10k -k async --threads $THREADS $app" ;;
    c10k-gevent) echo "$c10k -k gevent $app" ;;
    c10k-sync-preload) echo "$c10k -k sync --preload $app" ;;
    c10k-gevent-preload) echo "$c10k -k gevent --preload $app" ;;
    gunicorn-gevent-preload) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $WORKERS -k gevent --preload --chdir $dir --log-level warning $app" ;;
    gunicorn-sync-preload) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $WORKERS -k sync --preload --chdir $dir --log-level warning $app" ;;
    gunicorn-sync) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $WORKERS -k sync --chdir $dir --log-level warning $app" ;;
    gunicorn-gthread) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $WORKERS -k gthread --threads $THREADS --chdir $dir --log-level warning $app" ;;
    gunicorn-gevent) echo "$VENV/bin/gunicorn --bind 127.0.0.1:$port --workers $WORKERS -k gevent --chdir $dir --log-level warning $app" ;;
    uwsgi-threads) echo "$VENV/bin/uwsgi --http-socket 127.0.0.1:$port --master --processes $WORKERS --threads $THREADS --disable-logging --die-on-term --chdir $dir --module $app --virtualenv $VENV" ;;
  esac
}
SERVERS=(c10k-sync c10k-thread c10k-gthread c10k-async c10k-gevent c10k-sync-preload c10k-gevent-preload gunicorn-sync gunicorn-gthread gunicorn-gevent gunicorn-sync-preload gunicorn-gevent-preload uwsgi-threads)

# workers MASTER: the master's children. The master is the process setsid started (taskset execs
# into it); its children are the workers, and c10k's zygote (`sample` tells it apart).
workers() { pgrep -P "$1" || true; }
kib() { awk -v k="$2" '$1 == k":" {print $2; exit}' "$1" 2>/dev/null; }

echo "app,server,pid,role,rss_kib,pss_kib,anon_kib,threads" >"$TMP/raw.csv"
sample() { # APP NAME: one line per process of the running server
  local app=$1 name=$2 p role
  for p in "$SERVER" $(workers "$SERVER"); do
    role=worker; [[ $p == "$SERVER" ]] && role=master
    # c10k's zygote, which forks its Python workers, is no worker (see crates/serve/src/zygote.rs).
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == c10k-zygote ]] && role=zygote
    echo "$app,$name,$p,$role,$(kib "/proc/$p/status" VmRSS),$(kib "/proc/$p/smaps_rollup" Pss),$(kib "/proc/$p/smaps_rollup" Anonymous),$(kib "/proc/$p/status" Threads)" >>"$TMP/raw.csv"
  done
}

measure() { # APP MODULE CHDIR PATH...
  local app=$1 module=$2 dir=$3; shift 3
  local s port
  for s in "${SERVERS[@]}"; do
    port=$(free_port)
    # shellcheck disable=SC2046 # the command is a word list
    if ! start "$s" "$port" "$SRV_CPU" / $(server_cmd "$s" "$module" "$port" "$dir"); then
      stop; continue
    fi
    local path
    for path in "$@"; do
      taskset -c "$GEN_CPU" ab -q -r -n "$WARM" -c $((2 * THREADS)) "http://127.0.0.1:$port$path" >"$TMP/ab" 2>&1 ||
        echo "$app $s: ab on $path failed: $(tail -1 "$TMP/ab")" >&2
      grep -E '^(Failed|Non-2xx)' "$TMP/ab" | grep -v ' 0$' | sed "s|^|$app $s $path: |" >&2 || true
    done
    sleep 0.5 # let the last connections close
    sample "$app" "$s"
    echo "$app $s: $(grep -c "^$app,$s,.*,worker," "$TMP/raw.csv") workers sampled" >&2
    stop
  done
}
measure flask flask_app:app "$APPS" /hello '/stream?n=50'
measure django djangoproj.wsgi:application "$APPS/djangoproj" / /notes

mkdir -p "$OUT"
cp "$TMP/raw.csv" "$OUT/raw.csv"
{
  echo "# Memory per worker: c10k vs gunicorn and uWSGI hosting the same app"
  echo
  echo "Command: \`WARM=$WARM THREADS=$THREADS scripts/wsgi-rss.sh\` ($WORKERS workers each; servers on CPU $SRV_CPU, ab on CPU $GEN_CPU)  "
  echo "Machine: $(nproc) CPUs, kernel $(uname -r), $("$VENV/bin/python" -V 2>&1)  "
  echo "Commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with uncommitted changes)')  "
  echo "Peers: $("$VENV/bin/python" -c 'import importlib.metadata as m
print(", ".join(p + " " + m.version(p) for p in ("flask", "django", "gunicorn", "uwsgi")))' 2>/dev/null)"
  echo
  python3 - "$OUT/raw.csv" <<'EOF'
import csv, statistics, sys

rows = list(csv.DictReader(open(sys.argv[1])))
apps = list(dict.fromkeys(r["app"] for r in rows))
servers = list(dict.fromkeys(r["server"] for r in rows))


def med(app, server, key, role="worker"):
    v = [float(r[key]) for r in rows if r["app"] == app and r["server"] == server and r["role"] == role and r[key]]
    return statistics.median(v) if v else None


def total(app, server):
    v = [float(r["pss_kib"]) for r in rows if r["app"] == app and r["server"] == server and r["pss_kib"]]
    return sum(v) if v else None


def mib(v):
    return "–" if v is None else f"{v / 1024:.1f}"


# Each c10k class against gunicorn's class of the same model, then against gthread.
model = {"c10k-sync": "gunicorn-sync", "c10k-gevent": "gunicorn-gevent",
         "c10k-sync-preload": "gunicorn-sync-preload",
         "c10k-gevent-preload": "gunicorn-gevent-preload"}
for app in apps:
    print(f"## {app}")
    print()
    print("Per worker process, medians over the workers (MiB); the master and c10k's zygote separately.")
    print()
    print("| server | workers | RSS | PSS | anonymous | threads | master RSS | master PSS | zygote PSS | total PSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in servers:
        n = sum(1 for r in rows if r["app"] == app and r["server"] == s and r["role"] == "worker")
        if not n:
            continue
        t = med(app, s, "threads")
        print(f"| {s} | {n} | {mib(med(app, s, 'rss_kib'))} | {mib(med(app, s, 'pss_kib'))} | "
              f"{mib(med(app, s, 'anon_kib'))} | {t:.0f} | {mib(med(app, s, 'rss_kib', 'master'))} | "
              f"{mib(med(app, s, 'pss_kib', 'master'))} | {mib(med(app, s, 'pss_kib', 'zygote'))} | "
              f"{mib(total(app, s))} |")
    print()
    print("| c10k class | gunicorn peer | RSS ratio | PSS ratio | total PSS ratio | goal (RSS ≤ gunicorn's) |")
    print("|---|---|---|---|---|---|")
    for s in servers:
        if not s.startswith("c10k-") or med(app, s, "rss_kib") is None:
            continue
        for p in dict.fromkeys([model.get(s, "gunicorn-gthread"), "gunicorn-gthread"]):
            mine, theirs = med(app, s, "rss_kib"), med(app, p, "rss_kib")
            pmine, ptheirs = med(app, s, "pss_kib"), med(app, p, "pss_kib")
            if theirs is None:
                print(f"| {s} | {p}: not measured | – | – | – | not checked |")
                continue
            print(f"| {s} | {p} | {mine / theirs:.2f} | {pmine / ptheirs:.2f} | "
                  f"{total(app, s) / total(app, p):.2f} | {'met' if mine <= theirs else 'NOT met'} |")
    print()
EOF
} >"$OUT/results.md"
cat "$OUT/results.md"
echo "written: $OUT/results.md, $OUT/raw.csv" >&2
