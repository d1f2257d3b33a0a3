#!/usr/bin/env bash
# c10k serve (async, 1 worker) beside nginx (1 worker, `return 200 "hello\n"`), both pinned to
# CPU 0, each loaded by wrk pinned to CPU 1, in the same run. Prints requests/s medians and the
# ratio c10k / nginx, and writes them under runs/ (or OUT=DIR).
#
# usage: scripts/serve-vs-nginx.sh [REPEATS] [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-3}
duration=${2:-5}
conns=${3:-50}
for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light wrk util-linux)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs to pin server and load generator apart" >&2; exit 2; fi

cargo build --release -q -p c10k
bin=target/release/c10k
tmp=$(mktemp -d)
cleanup() { [ -n "${nginx_pid:-}" ] && kill "$nginx_pid" 2>/dev/null; [ -n "${c10k_pid:-}" ] && kill "$c10k_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
c10k_port=$(free_port)

mkdir -p "$tmp/logs"
cat > "$tmp/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $tmp/logs/error.log warn;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port backlog=2048;
    location / { return 200 "hello\n"; }
  }
}
CONF
taskset -c 0 nginx -p "$tmp" -c "$tmp/nginx.conf" &
nginx_pid=$!
taskset -c 0 "$bin" serve --bind "127.0.0.1:$c10k_port" --workers 1 --worker-class async \
  --log-level warn &
c10k_pid=$!

wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 never answered" >&2; exit 1; }
wait_up "$nginx_port"
wait_up "$c10k_port"

run_wrk() { taskset -c 1 wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

nginx_rps=(); c10k_rps=()
for i in $(seq "$repeats"); do
  # Alternate the order so drift (thermal, noise) does not favour one side.
  if [ $((i % 2)) -eq 1 ]; then
    c10k_rps+=("$(run_wrk "$c10k_port")"); nginx_rps+=("$(run_wrk "$nginx_port")")
  else
    nginx_rps+=("$(run_wrk "$nginx_port")"); c10k_rps+=("$(run_wrk "$c10k_port")")
  fi
  echo "round $i: c10k ${c10k_rps[-1]} req/s, nginx ${nginx_rps[-1]} req/s" >&2
done
c10k_med=$(printf '%s\n' "${c10k_rps[@]}" | median)
nginx_med=$(printf '%s\n' "${nginx_rps[@]}" | median)
ratio=$(awk -v a="$c10k_med" -v b="$nginx_med" 'BEGIN {printf "%.2f", a/b}')
# The machine's speed drifts between rounds (shared host): the ratio within each round, where
# both servers ran back to back, is the steadier figure.
pair_ratio=$(for i in "${!c10k_rps[@]}"; do
  awk -v a="${c10k_rps[$i]}" -v b="${nginx_rps[$i]}" 'BEGIN {print a/b}'; done | median)
pair_ratio=$(printf '%.2f' "$pair_ratio")

out=${OUT:-runs/$(date -u +%Y-%m-%d)-serve-vs-nginx}
mkdir -p "$out"
{
  echo "# c10k serve vs nginx: hello, wrk -t1 -c$conns -d${duration}s, $repeats rounds"
  echo
  echo "Command: \`scripts/serve-vs-nginx.sh $repeats $duration $conns\`  "
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)  "
  echo "Servers pinned to CPU 0 (1 worker each), wrk pinned to CPU 1."
  echo
  echo "| server | req/s per round | median req/s |"
  echo "|---|---|---|"
  echo "| c10k serve (async, 1 worker) | ${c10k_rps[*]} | $c10k_med |"
  echo "| nginx $(nginx -v 2>&1 | cut -d/ -f2) (1 worker) | ${nginx_rps[*]} | $nginx_med |"
  echo
  echo "**c10k / nginx = $ratio** (ratio of medians); median of the per-round ratios: **$pair_ratio**"
} | tee "$out/results.md"
