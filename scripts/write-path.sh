#!/usr/bin/env bash
# The write path's claim, measured: POST /messages through the journal (group commit + batched
# flush) against the naive way (--write-mode direct: one auto-increment INSERT per request,
# answered after the database commits), same binary, same machine, same run, reported as a ratio.
#
#   scripts/write-path.sh                        # SQLite (the embedded default)
#   eval "$(scripts/ci-services.sh)"; scripts/write-path.sh   # + MariaDB and PostgreSQL
#
# Knobs: N (requests per run, default 20000), C (concurrency, default 64), ROUNDS (default 3:
# journal and direct alternate, the median round is reported, so a noisy neighbour hits both),
# KEEPALIVE (default 1: ab -k), OUT (result dir, default runs/<UTC date>/write-path).
# Needs ab (apache2-utils), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
C=${C:-64}
ROUNDS=${ROUNDS:-3}
KEEPALIVE=${KEEPALIVE:-1}
AB_K=()
[[ $KEEPALIVE == 1 ]] && AB_K=(-k)
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

# run BACKEND URL MODE ROUND -> prints "rps p50 p99 failed non2xx"
run() {
  local name=$1 url=$2 mode=$3 round=$4 port data pid
  port=$(free_port)
  data=$(mktemp -d)
  local args=(serve --bind "127.0.0.1:$port" --data-dir "$data" --write-mode "$mode" --instance-id 0)
  [[ -n $url ]] && args+=(--database "$url")
  C10K_LOG=warn "$BIN" "${args[@]}" >"$OUT/$name-$mode-$round.server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/ids" >/dev/null 2>&1 && break
    sleep 0.1
  done
  ab "${AB_K[@]}" -q -n 500 -c "$C" -p "$BODY" -T application/json "http://127.0.0.1:$port/messages" >/dev/null 2>&1 || true
  ab "${AB_K[@]}" -n "$N" -c "$C" -p "$BODY" -T application/json "http://127.0.0.1:$port/messages" \
    >"$OUT/$name-$mode-$round.ab.txt" 2>&1 || true
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  rm -rf "$data"
  # ab counts a response whose length differs from the first as "failed (Length)": direct mode's
  # auto-increment ids grow a digit now and then. Only connect/receive/exception failures count.
  awk '
    /^Requests per second:/ {rps=$4}
    /\(Connect:/ {gsub(/[(),]/, ""); failed=$2+$4+$8}
    /^Non-2xx responses:/ {non2xx=$3}
    /^  50%/ {p50=$2}
    /^  99%/ {p99=$2}
    END {printf "%s %s %s %s %s\n", rps, p50, p99, failed+0, non2xx+0}' "$OUT/$name-$mode-$round.ab.txt"
}

{
  echo "# POST /messages: journal (group commit) vs direct INSERT per request"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ab ${AB_K[*]} -n $N -c $C, median of $ROUNDS alternating rounds,"
  echo "\`c10k serve\` defaults (async worker class, 1 worker, --durability fsync), load generator on the same machine."
  echo
  echo "| database | mode | req/s | p50 ms | p99 ms | failed | non-2xx |"
  echo "|---|---|---:|---:|---:|---:|---:|"
} >"$OUT/summary.md"

# median ROW... -> the row whose req/s is the median
median() { printf '%s\n' "$@" | sort -g -k1,1 | sed -n "$(( ($# + 1) / 2 ))p"; }

ratios=()
for b in "${backends[@]}"; do
  name=${b%%|*}
  url=${b#*|}
  js=() ds=()
  for round in $(seq 1 "$ROUNDS"); do
    js+=("$(run "$name" "$url" journal "$round")")
    ds+=("$(run "$name" "$url" direct "$round")")
    echo "write-path: $name round $round: journal ${js[-1]%% *} req/s, direct ${ds[-1]%% *} req/s" >&2
  done
  read -r j_rps j_p50 j_p99 j_fail j_non <<<"$(median "${js[@]}")"
  read -r d_rps d_p50 d_p99 d_fail d_non <<<"$(median "${ds[@]}")"
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
