# Sourced by the scripts that put c10k beside Python peers (wsgi-vs-peers.sh, gevent-vs-peers.sh):
# the venv, the release binary, a temp dir removed on exit, and one server at a time started in
# its own process group on a loopback port, pinned, and stopped with everything it forked.
#
#   source scripts/lib-peers.sh
#   peers_need wrk taskset curl            # tools on PATH, or exit naming the package
#   peers_venv gunicorn uwsgi              # VENV=$C10K_TEST_VENV (else python-venv.sh); bins checked
#   peers_build                            # C10K=target/release/c10k
#   port=$(free_port)
#   start NAME PORT CPUS PROBE_PATH CMD... # SERVER=pgid; waits until PROBE_PATH answers 2xx
#   rss_mb; pss_mb                         # memory of SERVER's process group
#   stop                                   # TERM, then KILL, the whole group
#
# Server logs go to $TMP/NAME.log (shown when a server does not start). Expects to be sourced from
# the repository root (the scripts cd there first) with `set -euo pipefail`.

# peers_need TOOL...: each tool on PATH, or exit 1 naming what to install.
peers_need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "missing: $tool (apt-get install apache2-utils wrk curl util-linux)" >&2
      exit 1
    }
  done
}

# peers_venv BIN...: VENV, the Python venv of the apps and peers; each BIN must be in it.
peers_venv() {
  if [[ -z ${C10K_TEST_VENV:-} ]]; then
    eval "$(bash scripts/python-venv.sh)"
  fi
  VENV=$C10K_TEST_VENV
  local b
  for b in "$@"; do
    [[ -x $VENV/bin/$b ]] || { echo "missing $VENV/bin/$b (scripts/python-venv.sh installs it)" >&2; exit 1; }
  done
}

# peers_build: the release binary, as C10K.
peers_build() {
  cargo build --release -p c10k >&2
  C10K=$PWD/target/release/c10k
}

TMP=$(mktemp -d)
SERVER=
peers_cleanup() {
  if [[ -n $SERVER ]]; then kill -KILL -- "-$SERVER" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap peers_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PORT CPUS PROBE_PATH CMD...: CMD in its own process group (SERVER), pinned to CPUS;
# returns once GET PROBE_PATH answers, or 1 (with the log's tail) after 15 s.
start() {
  local name=$1 port=$2 cpus=$3 probe=$4; shift 4
  setsid taskset -c "$cpus" "$@" >"$TMP/$name.log" 2>&1 &
  SERVER=$!
  local _
  for _ in $(seq 150); do
    curl -fs -o /dev/null "http://127.0.0.1:$port$probe" && return 0
    sleep 0.1
  done
  echo "$name did not start:" >&2
  tail -20 "$TMP/$name.log" >&2
  return 1
}

# stop: TERM to SERVER's process group, KILL after 5 s.
stop() {
  [[ -n $SERVER ]] || return 0
  kill -TERM -- "-$SERVER" 2>/dev/null || true
  local _
  for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}

# rss_mb: the summed RSS (MB) of SERVER's process group (shared pages counted in each process).
rss_mb() { ps -o rss= -g "$SERVER" 2>/dev/null | awk '{s+=$1} END {printf "%.0f", s/1024}'; }

# pss_mb: the summed PSS (MB) of SERVER's process group (shared pages split between sharers).
pss_mb() {
  local pid total=0 kb
  for pid in $(ps -o pid= -g "$SERVER" 2>/dev/null); do
    kb=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  echo $((total / 1024))
}

# wrk_rps FILE: requests/s of a wrk report. wrk_errors FILE: its errors in total (socket errors
# of every kind plus non-2xx answers), 0 when none. wrk_error_text FILE: those lines, commas
# dropped (for a CSV field), "-" when none.
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
wrk_errors() {
  awk '/Socket errors:/ {gsub(/,/, ""); for (i = 3; i <= NF; i += 2) n += $(i + 1)}
       /Non-2xx or 3xx responses:/ {n += $NF}
       END {print n + 0}' "$1"
}
wrk_error_text() {
  local e
  e=$(awk '/Non-2xx|Socket errors/ {gsub(/,/, ""); sub(/^ +/, ""); printf "%s; ", $0}' "$1")
  echo "${e:--}"
}
