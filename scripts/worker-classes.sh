#!/usr/bin/env bash
# The seed's experiment for every worker class: `ab -n N -c C '/?delay=D'` against c10k serve
# with 4 workers (gthread: 50 threads each), beside the ceiling each model allows:
#   sync: W / D     gthread: min(C, W*T) / D     thread, async: C / D
# Writes runs/<date>-worker-classes/results.md.
#
# usage: scripts/worker-classes.sh [N] [C] [DELAY]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}; c=${2:-100}; delay=${3:-0.1}
workers=4; threads=50
command -v ab >/dev/null || { echo "missing ab (apt-get install -y apache2-utils)" >&2; exit 2; }

cargo build --release -q -p c10k
bin=target/release/c10k
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

out="runs/$(date -u +%Y-%m-%d)-worker-classes"
mkdir -p "$out"
{
  echo "# Worker classes: ab -n $n -c $c '/?delay=$delay', $workers workers"
  echo
  echo "Command: \`scripts/worker-classes.sh $n $c $delay\`  "
  echo "Machine: $(nproc) CPUs, kernel $(uname -r)"
  echo
  echo "| class | workers × threads | requests/s | limit of the model | of limit | failed |"
  echo "|---|---|---|---|---|---|"
} > "$out/results.md"

for class in sync thread gthread async; do
  t=1; [ "$class" = gthread ] && t=$threads
  port=$(free_port)
  "$bin" serve --bind "127.0.0.1:$port" -k "$class" -w "$workers" --threads "$t" \
    --backlog 4096 --log-level warn &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  report=$(ab -r -n "$n" -c "$c" "http://127.0.0.1:$port/?delay=$delay" 2>/dev/null)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rps=$(awk '/Requests per second/ {print $4}' <<<"$report")
  failed=$(awk '/Failed requests/ {print $3}' <<<"$report")
  case $class in
    sync) capacity=$workers ;;
    gthread) capacity=$(( c < workers * t ? c : workers * t )) ;;
    *) capacity=$c ;;
  esac
  limit=$(awk -v cap="$capacity" -v d="$delay" 'BEGIN {printf "%.0f", cap / d}')
  share=$(awk -v r="$rps" -v l="$limit" 'BEGIN {printf "%.0f%%", 100 * r / l}')
  echo "| $class | $workers × $t | $rps | $limit | $share | $failed |" | tee -a "$out/results.md"
done
cat "$out/results.md"
