#!/usr/bin/env bash
# c10k bench vs wrk against `c10k serve` (which answers pipelined requests in one write per
# batch): wrk -t1 -c50, c10k bench -k -c50 --threads 1, and c10k bench --pipeline 16, server on
# CPU 0, load generators on CPU 1, alternating rounds. Prints medians and ratios to wrk and writes
# runs/<date>-bench-pipeline/results.md (or OUT=DIR). wrk is given the two headers c10k bench sends beside
# Host (`User-Agent`, `Accept`, as ab does): the server is the bottleneck here, and parsing two
# more headers costs it a few per cent (ad hoc, 4 rounds: wrk 171k req/s with them, 177k
# without), which was counted against c10k bench.
#
# usage: scripts/bench-pipeline.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; secs=${2:-5}
command -v wrk >/dev/null || { echo "missing wrk (apt-get install -y wrk)" >&2; exit 2; }
cargo build --release -q -p c10k
bin=target/release/c10k
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
taskset -c 0 "$bin" serve --bind "127.0.0.1:$port" -w 1 --admin off --log-level warn --data-dir "$data" &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/"
ua="c10k-bench/$("$bin" --version | awk '{print $2}')"
wrk_r=(); c10k_r=(); pipe_r=()
for i in $(seq "$rounds"); do
  wrk_r+=("$(taskset -c 1 wrk -t1 -c50 -d"${secs}s" -H "User-Agent: $ua" -H "Accept: */*" "$url" | awk '/Requests\/sec/ {print $2}')")
  c10k_r+=("$(taskset -c 1 "$bin" bench -q -k -c 50 --threads 1 --duration "${secs}s" "$url" | awk '/Requests per second/ {print $4}')")
  pipe_r+=("$(taskset -c 1 "$bin" bench -q -k -c 50 --threads 1 --pipeline 16 --duration "${secs}s" "$url" | awk '/Requests per second/ {print $4}')")
  echo "round $i: wrk ${wrk_r[-1]}  c10k ${c10k_r[-1]}  c10k --pipeline 16 ${pipe_r[-1]}" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
w=$(median "${wrk_r[@]}"); c=$(median "${c10k_r[@]}"); p=$(median "${pipe_r[@]}")
out=${OUT:-runs/$(date -u +%Y-%m-%d)-bench-pipeline}; mkdir -p "$out"
{
  echo "# c10k bench vs wrk against c10k serve (hello), 50 connections, ${secs} s, $rounds rounds"
  echo
  echo "Command: \`scripts/bench-pipeline.sh $rounds $secs\`; server on CPU 0 (async, 1 worker), generators on CPU 1, 1 thread each."
  echo
  echo "| generator | req/s per round | median | ratio to wrk |"
  echo "|---|---|---:|---:|"
  echo "| wrk -t1 -c50 (with c10k bench's User-Agent and Accept) | ${wrk_r[*]} | $w | 1.00 |"
  echo "| c10k bench -k -c 50 | ${c10k_r[*]} | $c | $(awk -v a="$c" -v b="$w" 'BEGIN {printf "%.2f", a/b}') |"
  echo "| c10k bench -k -c 50 --pipeline 16 | ${pipe_r[*]} | $p | $(awk -v a="$p" -v b="$w" 'BEGIN {printf "%.2f", a/b}') |"
} | tee "$out/results.md"
