#!/usr/bin/env bash
# c10k bench against its peers (wrk and ab -k; oha is not packaged here), same machine, same run.
#
# Target: nginx, 1 worker, `return 200 "hello\n"`, pinned to cpu 0. Each generator is pinned
# to cpu 1, uses one thread and the same keep-alive connection count, for the same time.
# Every generator sends the same request: wrk is given the two headers c10k bench sends (as ab
# does), `User-Agent` and `Accept`, which it does not send by itself (the server parses them).
# Prints median requests/s, CPU-seconds per request and peak RSS, and the ratio c10k/wrk.
# Writes runs/<date>-bench/{raw.csv,results.md} (or OUT=DIR).
#
# Usage: scripts/bench-vs-peers.sh [CONNECTIONS=50] [SECONDS=5] [REPEATS=3]
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${1:-50}
SECS=${2:-5}
REPEATS=${3:-3}
GEN_CPU=${GEN_CPU:-1}
SRV_CPU=${SRV_CPU:-0}

for tool in nginx wrk ab taskset /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install nginx-light wrk apache2-utils time)" >&2; exit 1; }
done

cargo build --release -p c10k >&2
C10K=$PWD/target/release/c10k
# The headers c10k bench sends beside Host, for wrk to send too.
UA="c10k-bench/$("$C10K" --version | awk '{print $2}')"

OUT=${OUT:-runs/$(date -u +%Y-%m-%d)-bench}
mkdir -p "$OUT"
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
PORT2=$(free_port)

cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $TMP;
  proxy_temp_path $TMP;
  fastcgi_temp_path $TMP;
  uwsgi_temp_path $TMP;
  scgi_temp_path $TMP;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location / { return 200 "hello\n"; }
  }
  # The same, with an access log: the server's own count of the requests it answered.
  server {
    listen 127.0.0.1:$PORT2 backlog=4096;
    access_log $TMP/access.log;
    location / { return 200 "hello\n"; }
  }
}
EOF
taskset -c "$SRV_CPU" nginx -p "$TMP" -c "$TMP/nginx.conf" &
NGINX=$!
cleanup() { kill "$NGINX" 2>/dev/null || true; wait "$NGINX" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT)).close()" 2>/dev/null && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT/"

# run NAME CMD...: runs pinned to the generator cpu under /usr/bin/time; prints "rps cpu_s rss_kb".
run() {
  local name=$1; shift
  /usr/bin/time -f "%U %S %M" -o "$TMP/time" taskset -c "$GEN_CPU" "$@" >"$TMP/out" 2>"$TMP/err" || true
  local rps
  case $name in
    wrk*) rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/out") ;;
    *)    rps=$(awk '/^Requests per second:/ {print $4}' "$TMP/out") ;;
  esac
  local reqs
  case $name in
    wrk*) reqs=$(awk '/requests in/ {print $1}' "$TMP/out") ;;
    *)    reqs=$(awk '/^Complete requests:/ {print $3}' "$TMP/out") ;;
  esac
  read -r user sys rss <"$TMP/time"
  echo "$name,${ROUND:-0},${rps:-0},${reqs:-0},$user,$sys,$rss" >>"$OUT/raw.csv"
}

echo "tool,round,rps,requests,user_s,sys_s,max_rss_kb" >"$OUT/raw.csv"
one() {
  case $1 in
    wrk) run wrk wrk -t1 -c"$CONNS" -d"${SECS}s" -H "User-Agent: $UA" -H "Accept: */*" "$URL" ;;
    c10k) run c10k "$C10K" bench -q -k -c "$CONNS" --threads 1 --duration "${SECS}s" "$URL" ;;
    ab) run ab ab -q -k -c "$CONNS" -t "$SECS" -n 100000000 "$URL" ;;
    c10k-pipeline16) run c10k-pipeline16 "$C10K" bench -q -k -c "$CONNS" --threads 1 --pipeline 16 --duration "${SECS}s" "$URL" ;;
  esac
}
TOOLS=(wrk c10k ab c10k-pipeline16)
for r in $(seq "$REPEATS"); do
  echo "round $r/$REPEATS" >&2
  ROUND=$r
  # Rotate the order each round so drift in the machine's load does not favour one tool.
  for i in "${!TOOLS[@]}"; do
    one "${TOOLS[$(( (i + r - 1) % ${#TOOLS[@]} ))]}"
  done
done
ROUND=0
# Peak RSS for a 1,000,000-request run.
run c10k-1M "$C10K" bench -q -k -c "$CONNS" --threads 1 -n 1000000 "$URL"
run ab-1M ab -q -k -c "$CONNS" -n 1000000 "$URL"

# Accuracy: what each tool reports against what the server logged.
served() { wc -l <"$TMP/access.log" | tr -d ' '; }
: >"$TMP/access.log"
taskset -c "$GEN_CPU" "$C10K" bench -q -k -c "$CONNS" --threads 1 -n 200000 "http://127.0.0.1:$PORT2/" >"$TMP/out"
echo "c10k -n 200000,$(awk '/^Complete requests:/ {print $3}' "$TMP/out"),$(served)" >"$OUT/accuracy.csv"
: >"$TMP/access.log"
taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT2/" >"$TMP/out"
echo "wrk -d2s,$(awk '/requests in/ {print $1}' "$TMP/out"),$(served)" >>"$OUT/accuracy.csv"
: >"$TMP/access.log"
taskset -c "$GEN_CPU" "$C10K" bench -q -k -c "$CONNS" --threads 1 --duration 2s "http://127.0.0.1:$PORT2/" >"$TMP/out"
echo "c10k --duration 2s,$(awk '/^Complete requests:/ {print $3}' "$TMP/out"),$(served)" >>"$OUT/accuracy.csv"
: >"$TMP/access.log"
taskset -c "$GEN_CPU" ab -q -k -c "$CONNS" -n 200000 "http://127.0.0.1:$PORT2/" >"$TMP/out"
echo "ab -n 200000,$(awk '/^Complete requests:/ {print $3}' "$TMP/out"),$(served)" >>"$OUT/accuracy.csv"

python3 - "$OUT" "$CONNS" "$SECS" "$REPEATS" <<'EOF' | tee "$OUT/results.md"
import csv, statistics, sys, platform, subprocess
out, conns, secs, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(f"{out}/raw.csv")))
by = {}
for r in rows:
    by.setdefault(r["tool"], []).append(r)
def med(tool, f):
    return statistics.median(f(r) for r in by[tool])
def cpu_per_req(r):
    n = float(r["requests"]) or 1
    return (float(r["user_s"]) + float(r["sys_s"])) / n * 1e6
print(f"# c10k bench vs peers ({platform.node()}, {subprocess.run(['nproc'],capture_output=True,text=True).stdout.strip()} cpus)")
print()
print(f"nginx 1 worker `return 200` on cpu 0; generators on cpu 1, 1 thread, {conns} keep-alive connections, {secs} s, median of {repeats}.")
print()
print("| tool | requests/s | CPU µs/request | peak RSS MB |")
print("|---|---:|---:|---:|")
for tool in ["wrk", "c10k", "ab", "c10k-pipeline16", "c10k-1M", "ab-1M"]:
    if tool in by:
        print(f"| {tool} | {med(tool, lambda r: float(r['rps'])):,.0f} | {med(tool, cpu_per_req):.2f} | {med(tool, lambda r: float(r['max_rss_kb']))/1024:.1f} |")
w = med("wrk", lambda r: float(r["rps"]))
c = med("c10k", lambda r: float(r["rps"]))
p = med("c10k-pipeline16", lambda r: float(r["rps"]))
print()
def paired(tool):
    # Same-round ratios: both runs saw the same machine load, so drift cancels out.
    rounds = {r["round"]: float(r["rps"]) for r in by["wrk"]}
    return statistics.median(float(r["rps"]) / rounds[r["round"]] for r in by[tool] if rounds.get(r["round"]))
print(f"ratio c10k/wrk requests/s: **{c/w:.3f}** (medians), {paired('c10k'):.3f} (median of same-round ratios)")
print(f"c10k --pipeline 16 / wrk: **{p/w:.2f}** (medians), {paired('c10k-pipeline16'):.2f} (same-round)")
print(f"ratio c10k/wrk CPU per request: {med('c10k', cpu_per_req)/med('wrk', cpu_per_req):.3f}")
print()
print()
print("Server-side check (nginx access log lines vs the tool's own count of completed requests):")
print()
print("| run | tool reports | nginx logged |")
print("|---|---:|---:|")
for line in open(f"{out}/accuracy.csv"):
    name, tool, served = line.strip().split(",")
    print(f"| {name} | {tool} | {served} |")
print()
print("Load while measuring: " + open("/proc/loadavg").read().split()[0] + " (1-minute load average; this machine is shared).")
print()
print("Accuracy notes: wrk reports requests completed within its duration; ab and c10k bench report")
print("`Complete requests / Time taken` (ab's formula). With the generator pinned to one cpu, all three")
print("are CPU-bound on the generator or on nginx; the ratio, not the absolute figure, is the result.")
print("The 1M rows are fixed-count runs (-n 1000000) to compare peak RSS.")
EOF
echo "wrote $OUT/results.md" >&2
