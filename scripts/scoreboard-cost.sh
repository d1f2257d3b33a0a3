#!/usr/bin/env bash
# What per-request tracking (the processlist entry, status-class counters, bytes, the duration
# histogram) costs: two `c10k serve` (async, 1 worker), one with tracking and one with
# --no-request-tracking, both pinned to CPU 0, each loaded in turn by wrk pinned to CPU 1, in
# the same run. Prints requests/s medians and the ratio on / off, and writes them under runs/.
#
# On a shared machine throughput swings with other load, so the script also reports the median of
# the per-round ratios (each round runs both servers back to back) and the worker's CPU time per
# request (utime+stime from /proc), which other load disturbs far less than requests/s.
#
# usage: scripts/scoreboard-cost.sh [ROUNDS] [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-7}
duration=${2:-5}
conns=${3:-50}
for tool in wrk taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk util-linux curl python3)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs to pin server and load generator apart" >&2; exit 2; fi

cargo build --release -q -p c10k
bin=target/release/c10k
# The tracking calls of one keep-alive request in a tight loop (last of two rounds): "on off" ns.
read -r micro_on micro_off < <(cargo test --release -q -p c10k-serve --lib tracking_cost -- \
  --ignored --nocapture 2>/dev/null | awk '/tracking on:/ {on=$3} /tracking off:/ {off=$3} END {print on, off}')
tmp=$(mktemp -d)
cleanup() { for p in "${on_pid:-}" "${off_pid:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
on_port=$(free_port); on_admin=$(free_port)
off_port=$(free_port); off_admin=$(free_port)

taskset -c 0 "$bin" serve --bind "127.0.0.1:$on_port" --admin "127.0.0.1:$on_admin" \
  --workers 1 --worker-class async --log-level warn --data-dir "$tmp/on" &
on_pid=$!
taskset -c 0 "$bin" serve --bind "127.0.0.1:$off_port" --admin "127.0.0.1:$off_admin" \
  --workers 1 --worker-class async --log-level warn --data-dir "$tmp/off" --no-request-tracking &
off_pid=$!

wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done; echo "server on $1 never answered" >&2; exit 1; }
wait_up "$on_port"
wait_up "$off_port"

worker_of() { cat "/proc/$1/task/$1/children" | awk '{print $1}'; }
on_worker=$(worker_of "$on_pid"); off_worker=$(worker_of "$off_pid")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
# Prints "req/s cpu-µs-per-request" for one wrk run against port $1, worker pid $2.
run_wrk() {
  local before after out
  before=$(cpu_ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/")
  after=$(cpu_ticks "$2")
  awk -v b="$before" -v a="$after" -v tick="$tick" '
    /requests in/ {n = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s %.3f\n", rps, (a - b) / tick * 1e6 / n}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

on_rps=(); off_rps=(); on_cpu=(); off_cpu=(); pair=()
for i in $(seq "$rounds"); do
  # Alternate the order so drift (thermal, other load) does not favour one side.
  if [ $((i % 2)) -eq 1 ]; then
    read -r r c < <(run_wrk "$on_port" "$on_worker"); on_rps+=("$r"); on_cpu+=("$c")
    read -r r c < <(run_wrk "$off_port" "$off_worker"); off_rps+=("$r"); off_cpu+=("$c")
  else
    read -r r c < <(run_wrk "$off_port" "$off_worker"); off_rps+=("$r"); off_cpu+=("$c")
    read -r r c < <(run_wrk "$on_port" "$on_worker"); on_rps+=("$r"); on_cpu+=("$c")
  fi
  pair+=("$(awk -v a="${on_rps[-1]}" -v b="${off_rps[-1]}" 'BEGIN {printf "%.3f", a/b}')")
  echo "round $i: tracking on ${on_rps[-1]} req/s (${on_cpu[-1]} µs CPU/req), off ${off_rps[-1]} req/s (${off_cpu[-1]} µs CPU/req)" >&2
done
on_med=$(printf '%s\n' "${on_rps[@]}" | median)
off_med=$(printf '%s\n' "${off_rps[@]}" | median)
on_cpu_med=$(printf '%s\n' "${on_cpu[@]}" | median)
off_cpu_med=$(printf '%s\n' "${off_cpu[@]}" | median)
pair_med=$(printf '%s\n' "${pair[@]}" | median)
ratio=$(awk -v a="$on_med" -v b="$off_med" 'BEGIN {printf "%.3f", a/b}')
cpu_ratio=$(awk -v a="$on_cpu_med" -v b="$off_cpu_med" 'BEGIN {printf "%.3f", a/b}')
cost=$(awk -v a="$on_cpu_med" -v b="$off_cpu_med" 'BEGIN {printf "%.1f", (a/b - 1) * 100}')
# The tracked server really tracked: its counters saw the load.
tracked=$(curl -sf "http://127.0.0.1:$on_admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["requests_2xx"])')

out="runs/$(date -u +%Y-%m-%d)-scoreboard-cost"
mkdir -p "$out"
{
  echo "# Scoreboard cost: per-request tracking on vs off, hello, wrk -t1 -c$conns -d${duration}s, $rounds rounds"
  echo
  echo "Command: \`scripts/scoreboard-cost.sh $rounds $duration $conns\`  "
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)  "
  echo "Servers: c10k serve async, 1 worker, pinned to CPU 0; wrk pinned to CPU 1; rounds alternate."
  echo
  echo "| tracking | req/s per round | median req/s | worker CPU µs/request per round | median µs/request |"
  echo "|---|---|---|---|---|"
  echo "| on (default) | ${on_rps[*]} | $on_med | ${on_cpu[*]} | $on_cpu_med |"
  echo "| off (--no-request-tracking) | ${off_rps[*]} | $off_med | ${off_cpu[*]} | $off_cpu_med |"
  echo
  echo "- throughput on / off: ratio of medians **$ratio**, median of per-round ratios **$pair_med** (${pair[*]})"
  echo "- worker CPU per request on / off: **$cpu_ratio** (tracking costs $cost % CPU per request; target ≤ 2 %)"
  echo "- the tracking calls of one request, timed in a loop (\`track::tests::tracking_cost_per_request\`): $micro_on ns on, $micro_off ns off = $(awk -v a="$micro_on" -v b="$micro_off" -v c="$off_cpu_med" 'BEGIN {printf "%.1f", (a - b) / (c * 1000) * 100}') % of the untracked worker's CPU per request"
  echo "- the tracked server counted $tracked 2xx responses; other processes were compiling on these 2 CPUs during the run (load average $(cut -d' ' -f1-3 /proc/loadavg)), so single rounds swing widely."
} | tee "$out/results.md"
