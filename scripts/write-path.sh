#!/usr/bin/env bash
# The write path's claim, measured: POST /messages through the journal (group commit + batched
# flush) against the naive way (--write-mode direct: one auto-increment INSERT per request,
# answered after the database commits), same binary, same machine, same run, reported as a ratio.
#
#   scripts/write-path.sh                        # SQLite (the embedded default)
#   eval "$(scripts/ci-services.sh)"; scripts/write-path.sh   # + MariaDB and PostgreSQL
#
# Knobs: N (requests per run, default 20000), C (concurrency, default 64), OUT (result dir,
# default runs/<UTC date>/write-path). Needs ab (apache2-utils) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
C=${C:-64}
OUT=${OUT:-runs/$(date -u +%Y-%m-%d)/write-path}
mkdir -p "$OUT"
for tool in ab curl python3; do
  command -v $tool >/dev/null || { echo "write-path: $tool is needed (apt-get install apache2-utils curl)" >&2; exit 1; }
done

cargo build --release -q -p c10k -p c10k-store --examples --bins
BIN=target/release/c10k

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BODY=$(mktemp)
printf '{"room":"bench","user":"ab","text":"hello from the write-path benchmark"}' >"$BODY"

backends=("sqlite|")
[[ -n ${C10K_TEST_MYSQL_URL:-} ]] && backends+=("mariadb|$C10K_TEST_MYSQL_URL")
[[ -n ${C10K_TEST_POSTGRES_URL:-} ]] && backends+=("postgres|$C10K_TEST_POSTGRES_URL")

# run BACKEND URL MODE -> prints "rps p50 p99 failed non2xx"
run() {
  local name=$1 url=$2 mode=$3 port data pid
  port=$(free_port)
  data=$(mktemp -d)
  local args=(serve --bind "127.0.0.1:$port" --data-dir "$data" --write-mode "$mode" --instance-id 0)
  [[ -n $url ]] && args+=(--database "$url")
  C10K_LOG=warn "$BIN" "${args[@]}" >"$OUT/$name-$mode.server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/ids" >/dev/null 2>&1 && break
    sleep 0.1
  done
  ab -q -n 500 -c "$C" -p "$BODY" -T application/json "http://127.0.0.1:$port/messages" >/dev/null 2>&1 || true
  ab -n "$N" -c "$C" -p "$BODY" -T application/json "http://127.0.0.1:$port/messages" \
    >"$OUT/$name-$mode.ab.txt" 2>&1 || true
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  rm -rf "$data"
  awk '
    /^Requests per second:/ {rps=$4}
    /^Failed requests:/ {failed=$3}
    /^Non-2xx responses:/ {non2xx=$3}
    /^  50%/ {p50=$2}
    /^  99%/ {p99=$2}
    END {printf "%s %s %s %s %s\n", rps, p50, p99, failed+0, non2xx+0}' "$OUT/$name-$mode.ab.txt"
}

{
  echo "# POST /messages: journal (group commit) vs direct INSERT per request"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ab -n $N -c $C, \`c10k serve\` defaults (async, 1 worker), --durability fsync"
  echo
  echo "| database | mode | req/s | p50 ms | p99 ms | failed | non-2xx |"
  echo "|---|---|---:|---:|---:|---:|---:|"
} >"$OUT/summary.md"

ratios=()
for b in "${backends[@]}"; do
  name=${b%%|*}
  url=${b#*|}
  read -r j_rps j_p50 j_p99 j_fail j_non <<<"$(run "$name" "$url" journal)"
  read -r d_rps d_p50 d_p99 d_fail d_non <<<"$(run "$name" "$url" direct)"
  echo "| $name | journal | $j_rps | $j_p50 | $j_p99 | $j_fail | $j_non |" >>"$OUT/summary.md"
  echo "| $name | direct | $d_rps | $d_p50 | $d_p99 | $d_fail | $d_non |" >>"$OUT/summary.md"
  ratios+=("$name: journal/direct = $(python3 -c "print(f'{float(\"$j_rps\")/float(\"$d_rps\"):.1f}')")×")
done

{
  echo
  for r in "${ratios[@]}"; do echo "- $r"; done
  echo
  echo "Ids from one thread (\`cargo run --release -p c10k-store --example ids_per_sec\`): $(target/release/examples/ids_per_sec)"
} >>"$OUT/summary.md"
rm -f "$BODY"
cat "$OUT/summary.md"
