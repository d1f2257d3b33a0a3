#!/usr/bin/env bash
# Soak: hosts a Flask and a Django app (scripts/soak/) under each worker class, 2 workers, drives
# mixed traffic on 127.0.0.1 for SOAK_SECONDS, and says per worker whether anything grew between the
# first sample after warm-up and the last one, taken once the traffic has stopped: open fds, OS
# threads, RSS, and, through the apps' /soak-probe view, Python's live objects after a collection,
# threading.active_count(), pymalloc blocks, malloc'd bytes, and response iterables returned
# against those closed (and Django's request_started against request_finished).
#
# The traffic (scripts/soak/client.py): GETs with and without keep-alive, pipelined requests, HEAD,
# POST bodies by Content-Length and chunked (up to 200 kB, spooled to a file) read fully, partly
# and not at all, 100-continue, streamed responses read whole and cut off (FIN or RST), clients
# gone before the answer, app exceptions (500), oversized headers (431), a slow view past
# --request-timeout 1 (504), and clients that send nothing or half a head until --header-timeout 2.
#
# Usage: [SOAK_SECONDS=75] [CLASSES="sync thread gthread async gevent"] [APPS="flask django"]
#        [C10K=target/release/c10k] scripts/soak.sh
# The venv (flask, django, gevent) is $C10K_TEST_VENV, else made by python-venv.sh. Exit status 1
# when a run's verdict is not "flat". Not for CI: it takes minutes and loads the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${SOAK_SECONDS:-75}
CLASSES=${CLASSES:-sync thread gthread async gevent}
APPS=${APPS:-flask django}
C10K=${C10K:-target/release/c10k}
[[ -x $C10K ]] || { echo "soak: no $C10K (cargo build --release -p c10k, or C10K=...)" >&2; exit 2; }
if [[ -z ${C10K_TEST_VENV:-} ]]; then eval "$(bash scripts/python-venv.sh)"; fi
PY=$C10K_TEST_VENV/bin/python
ulimit -n 20000
# Nothing left behind in scripts/soak/ (the apps and the client import common.py).
export PYTHONDONTWRITEBYTECODE=1

TMP=$(mktemp -d)
SERVER=
cleanup() {
  if [[ -n $SERVER ]] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER"
    wait "$SERVER" || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

failed=()
for app in $APPS; do
  for class in $CLASSES; do
    port=$(free_port)
    args=(-k "$class" -w 2)
    client=(--seconds "$SECONDS_EACH")
    case $class in
      gthread | async) args+=(--threads 8) ;;
    esac
    # A sync worker is held by each idle client and slow view: fewer of them, or nothing else runs.
    [[ $class == sync ]] && client+=(--idle 10 --slow 10)
    # The thread class retires threads idle for 30 s: the last sample waits for that.
    [[ $class == thread ]] && client+=(--settle 35)
    log=$TMP/$app-$class.log
    "$C10K" serve --venv "$C10K_TEST_VENV" --chdir scripts/soak -b "127.0.0.1:$port" "${args[@]}" \
      --request-timeout 1 --header-timeout 2 --log-level warn "soak_$app:app" >"$log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do
      "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null && break
      sleep 0.2
    done
    echo "== $app, -k $class ${args[*]:2}"
    if ! "$PY" scripts/soak/client.py "$port" "$SERVER" "${client[@]}" | grep -v '^\(warm\|t+\)'; then
      failed+=("$app/$class")
    fi
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    SERVER=
  done
done
if ((${#failed[@]})); then
  echo "soak: something grew under: ${failed[*]}"
  exit 1
fi
echo "soak: flat under every class"
