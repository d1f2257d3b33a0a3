#!/usr/bin/env bash
# README's req/s A/B of MALLOC_ARENA_MAX=2 (2026-12-06): c10k -k gthread with soak.sh's flags on
# cpu 0, with and without it, alternating, ROUNDS rounds; c10k bench on cpu 1, GET / (-c 16 -k) and
# 200 kB POSTs read whole (-c 8 -k). ab.txt: the first 3 rounds ran 15 s each, the next 4 10 s.
# Run from the repo root: ROUNDS=4 runs/2026-12-06-soak-rss/ab.sh /tmp/ab
set -uo pipefail
OUT=$1; ROUNDS=${ROUNDS:-3}; CLASS=${CLASS:-gthread}
VENV=${C10K_TEST_VENV:-/tmp/c10k-ci/venv}; C10K=${C10K:-target/release/c10k}; SOAK=scripts/soak
mkdir -p "$OUT"; ulimit -n 20000; export PYTHONDONTWRITEBYTECODE=1
head -c 200000 /dev/urandom | base64 -w0 | head -c 200000 > "$OUT/body"
port=18640
for r in $(seq "$ROUNDS"); do
  for v in default 2; do
    port=$((port+1))
    envs=(); [[ $v != default ]] && envs=(MALLOC_ARENA_MAX=$v)
    env "${envs[@]}" taskset -c 0 "$C10K" serve --venv "$VENV" --chdir "$SOAK" -b 127.0.0.1:$port -k $CLASS -w 2 --threads 8 \
      --request-timeout 1 --header-timeout 2 --log-level warn soak_flask:app >"$OUT/server-$r-$v.log" 2>&1 &
    sp=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 "$C10K" bench --threads 1 -k -c 16 --duration 3s -q http://127.0.0.1:$port/ >/dev/null 2>&1
    g=$(taskset -c 1 "$C10K" bench --threads 1 -k -c 16 --duration ${SECS_EACH:-10}s --json http://127.0.0.1:$port/ 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_per_second"])' 2>&1)
    p=$(taskset -c 1 "$C10K" bench --threads 1 -k -c 8 --duration ${SECS_EACH:-10}s -p "$OUT/body" -T application/octet-stream --json "http://127.0.0.1:$port/post?read=all" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_per_second"])' 2>&1)
    rss=$(for k in $(cat /proc/$sp/task/$sp/children); do awk '/VmRSS/{printf "%s ", $2}' /proc/$k/status; done)
    echo "round $r arena_max=$v get_rps=$g post200k_rps=$p rss_kb=$rss" | tee -a "$OUT/ab.txt"
    kill -TERM $sp; wait $sp
  done
done
