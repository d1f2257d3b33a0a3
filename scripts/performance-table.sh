#!/usr/bin/env bash
# Runs the scripts of the README's Performance table one after another, in the table's order, on
# the current commit, each writing to runs/<date>-<name>-<commit>/ (OUT=DIR); a log of what ran,
# when, and each script's exit status goes to runs/<date>-batch-<commit>.log. Takes about 30
# minutes on 2 cores; measure nothing else meanwhile.
#
# Needs what the scripts need: nginx, wrk, ab, the test venv with the peers (C10K_TEST_VENV, from
# scripts/python-venv.sh) and MariaDB/PostgreSQL for the write path (scripts/ci-services.sh):
#   eval "$(bash scripts/ci-services.sh)"; eval "$(bash scripts/python-venv.sh)"
#   scripts/performance-table.sh
set -uo pipefail
cd "$(dirname "$0")/.."

export C10K_PEERS_VENV=${C10K_PEERS_VENV:-${C10K_TEST_VENV:-}}
commit=$(git rev-parse --short HEAD)
day=runs/$(date -u +%Y-%m-%d)
log=$day-batch-$commit.log
mkdir -p runs
run() { # NAME COMMAND...: one script, its output and exit status in the log
  local name=$1; shift
  echo "=== $(date -u +%T) OUT=$day-$name-$commit $*" >>"$log"
  OUT=$day-$name-$commit "$@" >>"$log" 2>&1
  echo "=== exit $? at $(date -u +%T)" >>"$log"
}
run serve-vs-nginx scripts/serve-vs-nginx.sh 7 5 50
run wsgi scripts/wsgi-vs-peers.sh 5 50 5
run worker-classes env ONLY='py-|gunicorn|uwsgi|granian' ROUNDS=7 scripts/worker-classes.sh 1000 100 0.1
run gevent env C10K_RUN=1 scripts/gevent-vs-peers.sh 5 3
run uwsgi-vs-peers scripts/uwsgi-vs-peers.sh 3 5 50 1 async sync
run wsgi-rss env WARM=1000 THREADS=4 scripts/wsgi-rss.sh
run worker-sharing env ROUNDS=5 scripts/worker-sharing.sh
run bench scripts/bench-vs-peers.sh
run bench-pipeline scripts/bench-pipeline.sh 3 5
run write-path scripts/write-path.sh
echo "=== done at $(date -u +%T)" >>"$log"
echo "results under $day-*-$commit/, log $log"
