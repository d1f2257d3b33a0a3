#!/usr/bin/env bash
# The RSS runs of README's soak paragraph (2026-12-06): several servers side by side, all pinned to
# cpu 0, each hosting scripts/soak/soak_$APP.py with soak.sh's flags (-w 2 --threads 8
# --request-timeout 1 --header-timeout 2; a name containing "nort" drops --request-timeout), one
# scripts/soak/client.py each pinned to cpu 1, sampling every 10 s. Run from the repo root:
#   SECS=540 runs/2026-12-06-soak-rss/run.sh /tmp/r1 c10k-gthread:c10k:gthread: \
#     c10k-async:c10k:async: c10k-gthread-a2:c10k:gthread:MALLOC_ARENA_MAX=2 gunicorn-gthread:gunicorn:gthread:
#   SECS=555 runs/2026-12-06-soak-rss/run.sh /tmp/r2 c10k-gthread:c10k:gthread: \
#     c10k-gthread-nort:c10k:gthread: gunicorn-gthread:gunicorn:gthread:
#   SECS=540 runs/2026-12-06-soak-rss/run.sh /tmp/r3 c10k-gthread:c10k:gthread: gunicorn-gthread:gunicorn:gthread:
# (raw.csv's t_s and the sample times came from a copy of client.py that also printed time.time().)
# Each spec is name:c10k|gunicorn:class:ENV=V,... ; logs go to OUTDIR/NAME.{server,client}.log.
set -uo pipefail
OUT=$1; shift
SECS=${SECS:-540}; APP=${APP:-flask}
VENV=${C10K_TEST_VENV:-/tmp/c10k-ci/venv}; PY=$VENV/bin/python
C10K=${C10K:-target/release/c10k}
SOAK=scripts/soak
mkdir -p "$OUT"; ulimit -n 20000; export PYTHONDONTWRITEBYTECODE=1
pids=(); clients=()
port=18610
for spec in "$@"; do
  IFS=: read -r name kind class envs <<<"$spec"
  port=$((port+1))
  envarr=(); [[ -n $envs ]] && IFS=, read -ra envarr <<<"$envs"
  if [[ $kind == c10k ]]; then
    env "${envarr[@]}" taskset -c 0 "$C10K" serve --venv "$VENV" --chdir "$SOAK" -b 127.0.0.1:$port -k "$class" -w 2 --threads 8 \
      $([[ $name == *nort* ]] || echo --request-timeout 1) --header-timeout 2 --log-level warn "soak_$APP:app" >"$OUT/$name.server.log" 2>&1 &
  else
    env "${envarr[@]}" taskset -c 0 "$VENV/bin/gunicorn" --chdir "$SOAK" -b 127.0.0.1:$port -k "$class" -w 2 --threads 8 \
      --log-level warning "soak_$APP:app" >"$OUT/$name.server.log" 2>&1 &
  fi
  pids+=($!); echo "$name port $port pid $! ${envarr[*]}" >>"$OUT/servers.txt"
done
sleep 4
port=18610; i=0
for spec in "$@"; do
  IFS=: read -r name _ <<<"$spec"; port=$((port+1))
  taskset -c 1 "$PY" scripts/soak/client.py $port ${pids[$i]} --seconds "$SECS" --every 10 >"$OUT/$name.client.log" 2>&1 &
  clients+=($!); i=$((i+1))
done
wait "${clients[@]}"
for p in "${pids[@]}"; do kill -TERM $p; done
wait
echo done >"$OUT/done"
