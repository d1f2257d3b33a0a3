#!/usr/bin/env bash
# How many connections can one server hold? Opens CONNECTIONS keep-alive connections to
# `c10k serve`, each with a `/?delay=1` request in flight, for DURATION seconds, under the async
# class and (for contrast) the thread class, and prints: connections held, requests/s, failures,
# server RSS and RSS per connection. Also measures the memory of idle keep-alive connections.
# Loopback only; stops by itself.
#
# usage: scripts/c10k.sh [CONNECTIONS] [DURATION_SECONDS] [CLASSES] [SOURCE_ADDRESSES]
#   e.g. scripts/c10k.sh 10000 10            (async and thread)
#        scripts/c10k.sh 50000 20 async 4     (spreads over 127.0.0.1-4 and several processes)
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${1:-10000}
duration=${2:-10}
classes=${3:-"async thread"}
min_addrs=${4:-1}
delay=1

cargo build --release -q -p c10k
bin=target/release/c10k

# --- What the kernel allows -------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
ports=$((port_hi - port_lo + 1))
somaxconn=$(cat /proc/sys/net/core/somaxconn)
syn_backlog=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)
file_max=$(cat /proc/sys/fs/file-max)
echo "== limits"
printf '  %-34s %s\n' "open files per process (nofile)" "$nofile (hard $(ulimit -Hn))" \
  "net.ipv4.ip_local_port_range" "$port_lo-$port_hi ($ports ports per source address)" \
  "net.core.somaxconn" "$somaxconn" \
  "net.ipv4.tcp_max_syn_backlog" "$syn_backlog" \
  "fs.file-max" "$file_max"
# Queues too short for a burst of $conns connects make the kernel drop SYNs, and each dropped
# SYN costs the client a 1 s retransmission. Raise them for the run when we may, and put them back.
raise_sysctl() {  # name wanted current
  if [ "$3" -lt "$2" ]; then
    if sysctl -qw "$1=$2" 2>/dev/null; then
      echo "  raised $1 from $3 to $2 for this run"
      restore+=("$1=$3")
    else
      echo "  ! $1 is $3; raise it: sysctl -w $1=$2 (not allowed here)"
    fi
  fi
}
restore=()
trap 'for kv in "${restore[@]}"; do sysctl -qw "$kv"; done' EXIT
raise_sysctl net.core.somaxconn 65535 "$somaxconn"
raise_sysctl net.ipv4.tcp_max_syn_backlog 65535 "$syn_backlog"
somaxconn=$(cat /proc/sys/net/core/somaxconn)

# One process can hold about nofile-64 sockets: spread connections over enough server workers and
# load-generator processes, and over enough source addresses for the ephemeral port range.
per_proc=$((nofile - 64))
procs=$(( (conns + per_proc - 1) / per_proc ))
addrs=$(( (conns + ports - 1) / ports ))
[ "$addrs" -lt "$min_addrs" ] && addrs=$min_addrs
source_ips="127.0.0.1-127.0.0.$addrs"
if [ "$procs" -gt 1 ]; then
  echo "  nofile ($nofile) binds: using $procs server workers and $procs bench processes"
fi
if [ "$addrs" -gt 1 ]; then
  echo "  the port range binds ($ports per address pair): spreading over $source_ips"
fi
workers=$procs
worker_conns=$(( conns / workers + 64 ))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tree_rss_kib() {  # sum of VmRSS over a process and its descendants
  local pids; pids=$(pstree -p -T "$1" 2>/dev/null | grep -o '([0-9]\+)' | tr -d '()' || echo "$1")
  local sum=0; for p in $pids; do
    v=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); sum=$((sum + ${v:-0}))
  done; echo "$sum"
}
established() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }

out="runs/$(date -u +%Y-%m-%d)-c10k"
mkdir -p "$out"
results="$out/results-$conns.md"
{
  echo "# $conns connections, /?delay=$delay, ${duration}s, keep-alive"
  echo
  echo "Command: \`scripts/c10k.sh $conns $duration \"$classes\" $min_addrs\`  "
  echo "Machine: $(nproc) CPUs, kernel $(uname -r), nofile $nofile, ports $port_lo-$port_hi, somaxconn $somaxconn"
  echo
  echo "| class | workers | connections held (peak) | requests/s | limit (conns/delay) | failures | server RSS MiB (peak) | idle server RSS MiB | KiB per in-flight connection |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$results"

for class in $classes; do
  port=$(free_port)
  args=(serve --bind "127.0.0.1:$port" -k "$class" -w "$workers" --worker-connections "$worker_conns"
        --backlog 65535 --keepalive 30 --log-level warn)
  [ "$class" = thread ] && args+=(--threads 1)
  taskset -c 0 "$bin" "${args[@]}" 2>"$out/server-$class.log" &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  sleep 0.5
  idle_rss=$(tree_rss_kib "$server")

  bench_args=(bench -r -k -q -c "$conns" --duration "${duration}s" -s 10 --json
              --threads 1 --processes "$procs")
  [ "$addrs" -gt 1 ] && bench_args+=(--source-ips "$source_ips")
  taskset -c 1 "$bin" "${bench_args[@]}" "http://127.0.0.1:$port/?delay=$delay" \
    > "$out/bench-$class-$conns.json" 2>"$out/bench-$class-$conns.err" &
  bench=$!
  peak_conns=0; peak_rss=0
  while kill -0 "$bench" 2>/dev/null; do
    c=$(established "$port"); r=$(tree_rss_kib "$server")
    [ "$c" -gt "$peak_conns" ] && peak_conns=$c
    [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    sleep 0.5
  done
  wait "$bench" || echo "  bench exited non-zero (see $out/bench-$class-$conns.err)"
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true

  read -r rps failed < <(python3 - "$out/bench-$class-$conns.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(f"{r['requests_per_second']:.0f}", r["failed_requests"] + r["non_2xx"])
except Exception as e:
    print("n/a", f"n/a({e.__class__.__name__})")
PY
)
  per_conn=$(awk -v p="$peak_rss" -v i="$idle_rss" -v c="$peak_conns" 'BEGIN { if (c > 0) printf "%.1f", (p - i) / c; else print "n/a" }')
  limit=$((conns / delay))
  line="| $class | $workers | $peak_conns | $rps | $limit | $failed | $((peak_rss / 1024)) | $((idle_rss / 1024)) | $per_conn |"
  echo "$line" | tee -a "$results"
done

# --- Idle keep-alive connections: memory per connection that sent one request and waits -------
if [[ " $classes " == *" async "* ]] && [ "$conns" -le "$per_proc" ]; then
  port=$(free_port)
  taskset -c 0 "$bin" serve --bind "127.0.0.1:$port" -w 1 --worker-connections "$((conns + 64))" \
    --backlog 65535 --keepalive 60 --log-level warn 2>/dev/null &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  sleep 0.5
  before=$(tree_rss_kib "$server")
  python3 - "$port" "$conns" "$server" <<'PY' | tee -a "$results"
import socket, sys, time
port, n, server = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: c10k\r\n\r\n")
    socks.append(s)
for s in socks:
    data = b""
    while not data.endswith(b"hello\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
time.sleep(1)
def rss(pid):
    import subprocess
    pids = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split() + [pid]
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total
print(f"\nIdle keep-alive connections (async, 1 worker): {n} held, server RSS {rss(server) / 1024:.1f} MiB", end="")
for s in socks:
    s.close()
PY
  echo " (before: $((before / 1024)) MiB)" | tee -a "$results"
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
fi
echo
cat "$results"
