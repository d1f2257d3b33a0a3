#!/usr/bin/env bash
# nginx in front of four upstreams, in the same run, loaded by wrk through nginx:
#   A. c10k hosting hello.py over the uwsgi protocol (`c10k serve hello:application`,
#      `--bind uwsgi+unix:`; class $PY_CLASS, sync by default: one Python call at a time per
#      worker, as uWSGI's default)
#   B. uWSGI hosting the same hello.py over the uwsgi protocol (`uwsgi --socket`)
#   C. c10k's built-in app over HTTP (proxy_pass with upstream keepalive)
#   D. c10k's built-in app over the uwsgi protocol
# A/B is the headline: the same WSGI app, the same protocol, the same worker count (goal ≥ 1.3).
# D/C is the issue's second goal (uwsgi ≥ HTTP with keepalive, both c10k's built-in `hello`);
# D/B is extra information (a Rust handler against uWSGI running Python).
#
# CPUs, the same for every row: every upstream (c10k, uWSGI) runs on $SERVER_CPUS (default 0) and
# nothing else does; nginx (1 worker) and wrk (1 thread) share $FRONT_CPUS (default 1). Only one
# row is loaded at a time (the others' servers sit idle). Rounds rotate the order of the rows.
#
# Two layouts, both reported:
#   front-bound:    the upstream has its core to itself. On a 2-core machine nginx + wrk on the
#                   other core saturate first, so req/s mostly shows nginx's ceiling; the
#                   upstream's CPU µs per request is what tells the upstreams apart.
#   upstream-bound: each upstream (its whole process tree) sits in a cgroup of its own limited
#                   to the same $QUOTA % of one CPU (cgroup v2 `cpu.max`, or v1
#                   `cpu.cfs_quota_us`), so the upstream saturates before nginx and req/s shows
#                   the upstream's efficiency. Without $QUOTA: half the lowest CPU use of any
#                   upstream in the front-bound layout (what nginx let it use), so that every
#                   upstream saturates first even when the machine is busy; 20 if the front-bound
#                   layout was not run. Needs root and a cpu
#                   cgroup controller; skipped (and said so) otherwise. The script creates the
#                   cgroups and removes them on exit.
# For each row: req/s, the upstream's CPU µs/request (user + system, master and workers) and
# nginx's CPU µs/request; medians, ratios of medians and medians of per-round ratios.
# Writes runs/<date>-uwsgi-vs-peers/results.md.
#
# usage: scripts/uwsgi-vs-peers.sh [REPEATS] [DURATION_SECONDS] [CONNECTIONS] [WORKERS] [CLASS] [PY_CLASS]
# (CLASS: c10k's --worker-class for the built-in rows C and D, async by default; PY_CLASS: for
# row A, sync by default.) LAYOUTS="front upstream" (default) picks the layouts.
# uWSGI comes from $UWSGI, else /work/venv/bin/uwsgi, else PATH (pip install pyuwsgi); row A's
# virtualenv is $VENV, else uWSGI's (the directory above its bin/).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-3}
duration=${2:-5}
conns=${3:-50}
workers=${4:-1}
class=${5:-async}
py_class=${6:-sync}
quota=${QUOTA:-}
layouts=${LAYOUTS:-front upstream}
for tool in nginx wrk taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light wrk util-linux curl python3)" >&2; exit 2; }
done
uwsgi=${UWSGI:-}
if [ -z "$uwsgi" ]; then
  if [ -x /work/venv/bin/uwsgi ]; then uwsgi=/work/venv/bin/uwsgi; else uwsgi=$(command -v uwsgi || true); fi
fi
[ -n "$uwsgi" ] && [ -x "$uwsgi" ] || { echo "missing uWSGI: set UWSGI=/path/to/uwsgi (pip install pyuwsgi)" >&2; exit 2; }
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs to pin servers and load generator apart" >&2; exit 2; fi
server_cpus=${SERVER_CPUS:-0}
front_cpus=${FRONT_CPUS:-1}
venv=${VENV:-$(dirname "$(dirname "$uwsgi")")}

cargo build --release -q -p c10k
bin=target/release/c10k
tmp=$(mktemp -d)
pids=()
cgroups=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  # A cgroup can only be removed once empty; the processes are gone by now.
  for cg in "${cgroups[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
c10k_http=$(free_port)
port_a=$(free_port); port_b=$(free_port); port_c=$(free_port); port_d=$(free_port)

cat > "$tmp/hello.py" <<'PY'
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "6")])
    return [b"hello\n"]
PY

mkdir -p "$tmp/logs"
cat > "$tmp/uwsgi_params" <<'PARAMS'
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
PARAMS
# nginx's workers drop to `nobody` when started as root and could not reach the sockets in our
# private temp dir; run them as the user we are.
nginx_user=""
if [ "$(id -u)" = 0 ]; then nginx_user="user root;"; fi
cat > "$tmp/nginx.conf" <<CONF
$nginx_user
worker_processes 1;
daemon off;
error_log $tmp/logs/error.log warn;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  keepalive_requests 1000000;
  upstream c10k_http { server 127.0.0.1:$c10k_http; keepalive 256; }
  server {
    listen 127.0.0.1:$port_d backlog=2048;
    location / { include uwsgi_params; uwsgi_pass unix:$tmp/c10k.sock; }
  }
  server {
    listen 127.0.0.1:$port_b backlog=2048;
    location / { include uwsgi_params; uwsgi_pass unix:$tmp/uwsgi.sock; }
  }
  server {
    listen 127.0.0.1:$port_a backlog=2048;
    location / { include uwsgi_params; uwsgi_pass unix:$tmp/c10k-py.sock; }
  }
  server {
    listen 127.0.0.1:$port_c backlog=2048;
    location / {
      proxy_pass http://c10k_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
CONF

taskset -c "$server_cpus" "$bin" serve --bind "uwsgi+unix:$tmp/c10k.sock,127.0.0.1:$c10k_http" \
  --workers "$workers" --worker-class "$class" --admin off --backlog 2048 --log-level warn \
  >"$tmp/logs/c10k.log" 2>&1 &
pids+=($!); pid_c10k=$!
taskset -c "$server_cpus" "$bin" serve --bind "uwsgi+unix:$tmp/c10k-py.sock" --workers "$workers" \
  --worker-class "$py_class" --admin off --backlog 2048 --log-level warn --chdir "$tmp" --venv "$venv" \
  hello:application >"$tmp/logs/c10k-py.log" 2>&1 &
pids+=($!); pid_c10k_py=$!
(cd "$tmp" && exec taskset -c "$server_cpus" "$uwsgi" --socket "$tmp/uwsgi.sock" --master --die-on-term --workers "$workers" \
  --listen 1024 --disable-logging --wsgi-file hello.py >"$tmp/logs/uwsgi.log" 2>&1) &
pids+=($!); pid_uwsgi=$!
for _ in $(seq 100); do [ -S "$tmp/c10k.sock" ] && [ -S "$tmp/uwsgi.sock" ] && [ -S "$tmp/c10k-py.sock" ] && break; sleep 0.1; done
taskset -c "$front_cpus" nginx -p "$tmp" -c "$tmp/nginx.conf" &
pids+=($!); pid_nginx=$!

wait_up() {
  for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$1/" || true)" = "hello" ] && return 0
    sleep 0.1
  done
  echo "nothing answers hello on $1; logs:" >&2; tail -n 5 "$tmp"/logs/* >&2; exit 1
}
for p in "$port_a" "$port_b" "$port_c" "$port_d"; do wait_up "$p"; done

# CPU time (clock ticks, user + system) of a process and all its descendants: the upstream's
# master and workers, or nginx's master and worker. Req/s alone cannot tell an upstream that is
# cheaper from one that waits for a saturated front; CPU per request can.
tree_pids() {
  ps -e -o pid=,ppid= | awk -v root="$1" '{up[$1] = $2} END {
    for (x in up) { y = x; while (y != "" && y != root) y = up[y]; if (y == root) print x } }'
}
tree_ticks() {
  local p
  for p in $(tree_pids "$1"); do
    sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}'
  done | awk '{s += $1} END {print s + 0}'
}
hz=$(getconf CLK_TCK)

# The upstream-bound layout: one cpu cgroup per upstream, with the same quota, toggled between
# "no limit" and $QUOTA % of a CPU. Period 10 ms: a short period spreads the quota evenly instead
# of running 25 ms and stalling 75.
period_us=10000
cg_kind=""
if [[ " $layouts " == *" upstream "* ]]; then
  if [ "$(id -u)" != 0 ]; then
    echo "upstream-bound layout skipped: creating cgroups needs root" >&2
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    cg_kind=v2; cg_root=/sys/fs/cgroup
    grep -qw cpu "$cg_root/cgroup.subtree_control" || echo +cpu > "$cg_root/cgroup.subtree_control" || cg_kind=""
  elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    cg_kind=v1; cg_root=/sys/fs/cgroup/cpu
  else
    echo "upstream-bound layout skipped: no cpu cgroup controller (v2 cpu.max or v1 cpu.cfs_quota_us)" >&2
  fi
fi
cg_of() { echo "$cg_root/c10k-uwsgi-bench.$$.$1"; }
# cg_limit NAME PERCENT|max. The kernel refuses a quota under 1 ms: a small percentage gets a
# longer period.
cg_limit() {
  local cg p=$period_us; cg=$(cg_of "$1")
  if [ "$2" != max ]; then while [ $((p * $2 / 100)) -lt 1000 ]; do p=$((p * 2)); done; fi
  if [ "$cg_kind" = v2 ]; then
    if [ "$2" = max ]; then echo "max $p" > "$cg/cpu.max"
    else echo "$((p * $2 / 100)) $p" > "$cg/cpu.max"; fi
  else
    # Quota off before the period changes (a quota longer than the new period is refused).
    echo -1 > "$cg/cpu.cfs_quota_us"
    echo "$p" > "$cg/cpu.cfs_period_us"
    if [ "$2" != max ]; then echo "$((p * $2 / 100))" > "$cg/cpu.cfs_quota_us"; fi
  fi
}
if [ -n "$cg_kind" ]; then
  for name in c10k c10k_py uwsgi; do
    cg=$(cg_of "$name")
    mkdir "$cg"; cgroups+=("$cg")
    cg_limit "$name" max
  done
  # Every process of each upstream's tree (master and workers, with their threads).
  for entry in "c10k $pid_c10k" "c10k_py $pid_c10k_py" "uwsgi $pid_uwsgi"; do
    set -- $entry
    for p in $(tree_pids "$2"); do echo "$p" > "$(cg_of "$1")/cgroup.procs" 2>/dev/null || true; done
  done
else
  layouts=${layouts//upstream/}
fi
set_quota() { [ -n "$cg_kind" ] || return 0; local n; for n in c10k c10k_py uwsgi; do cg_limit "$n" "$1"; done; }

# Loads the front on port $1 and prints "req/s upstream-µs/request nginx-µs/request" (upstream =
# the tree of pid $2).
run_wrk() {
  local t0 t1 n0 n1 out
  t0=$(tree_ticks "$2"); n0=$(tree_ticks "$pid_nginx")
  out=$(taskset -c "$front_cpus" wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/")
  t1=$(tree_ticks "$2"); n1=$(tree_ticks "$pid_nginx")
  awk -v t="$((t1 - t0))" -v g="$((n1 - n0))" -v hz="$hz" '/requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%s %.1f %.1f\n", r, (n > 0 ? t * 1e6 / hz / n : 0), (n > 0 ? g * 1e6 / hz / n : 0)}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
med() { printf '%s\n' "$@" | median; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", (y > 0 ? x/y : 0)}'; }
# Median over rounds of the upstream's CPU use in % of one CPU: req/s × µs/request / 10^4.
use() {
  local -n rs=$1 us=$2
  printf '%.0f' "$(for i in "${!rs[@]}"; do awk -v r="${rs[$i]}" -v u="${us[$i]}" 'BEGIN {print r * u / 1e4}'; done | median)"
}
# Per-round ratios (both sides measured back to back) are steadier on a drifting host.
pair() {
  local -n xs=$1 ys=$2
  printf '%.2f' "$(for i in "${!xs[@]}"; do awk -v x="${xs[$i]}" -v y="${ys[$i]}" 'BEGIN {print (y > 0 ? x/y : 0)}'; done | median)"
}

out="runs/$(date -u +%Y-%m-%d)-uwsgi-vs-peers"
mkdir -p "$out"
report="$tmp/report.md"
{
  echo "# nginx → c10k over uwsgi vs nginx → uWSGI over uwsgi vs nginx → c10k over HTTP"
  echo
  echo "Command: \`scripts/uwsgi-vs-peers.sh $repeats $duration $conns $workers $class $py_class\` (QUOTA=${QUOTA:-auto}, LAYOUTS=\"${LAYOUTS:-front upstream}\")  "
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)  "
  echo "Upstreams pinned to CPU $server_cpus; nginx $(nginx -v 2>&1 | cut -d/ -f2) (1 worker) and wrk -t1 -c$conns -d${duration}s pinned to CPU $front_cpus; $repeats rounds per layout, order rotated.  "
  echo "c10k: --workers $workers; built-in app (C, D) --worker-class $class; hello.py (A) --worker-class $py_class. uWSGI $("$uwsgi" --version): --workers $workers, hello.py."
} > "$report"

for layout in $layouts; do
  if [ "$layout" = upstream ]; then
    if [ -z "$quota" ]; then
      quota=${front_min_use:-40}
      quota=$((quota / 2 > 2 ? quota / 2 : 2))
      quota_why="half the lowest upstream CPU use of the front-bound layout"
      [ -n "${front_min_use:-}" ] || { quota=20; quota_why="default"; }
    else
      quota_why="QUOTA"
    fi
    set_quota "$quota"
  else
    set_quota max
  fi
  a=(); b=(); c=(); d=(); ua=(); ub=(); uc=(); ud=(); na=(); nb=(); nc=(); nd=()
  row() {
    local r u g
    case $1 in
      a) read -r r u g < <(run_wrk "$port_a" "$pid_c10k_py"); a+=("$r"); ua+=("$u"); na+=("$g") ;;
      b) read -r r u g < <(run_wrk "$port_b" "$pid_uwsgi"); b+=("$r"); ub+=("$u"); nb+=("$g") ;;
      c) read -r r u g < <(run_wrk "$port_c" "$pid_c10k"); c+=("$r"); uc+=("$u"); nc+=("$g") ;;
      d) read -r r u g < <(run_wrk "$port_d" "$pid_c10k"); d+=("$r"); ud+=("$u"); nd+=("$g") ;;
    esac
  }
  for i in $(seq "$repeats"); do
    # Rotate the order so drift (thermal, noise) does not favour one side.
    case $((i % 4)) in
      1) row a; row b; row c; row d ;;
      2) row b; row c; row d; row a ;;
      3) row c; row d; row a; row b ;;
      0) row d; row a; row b; row c ;;
    esac
    echo "$layout round $i: A c10k hello.py/uwsgi ${a[-1]} (${ua[-1]} µs CPU/req), B uWSGI hello.py/uwsgi ${b[-1]} (${ub[-1]}), C c10k built-in/HTTP ${c[-1]} (${uc[-1]}), D c10k built-in/uwsgi ${d[-1]} (${ud[-1]}) req/s" >&2
  done
  a_med=$(med "${a[@]}"); b_med=$(med "${b[@]}"); c_med=$(med "${c[@]}"); d_med=$(med "${d[@]}")
  ua_med=$(med "${ua[@]}"); ub_med=$(med "${ub[@]}"); uc_med=$(med "${uc[@]}"); ud_med=$(med "${ud[@]}")
  na_med=$(med "${na[@]}"); nb_med=$(med "${nb[@]}"); nc_med=$(med "${nc[@]}"); nd_med=$(med "${nd[@]}")
  {
    echo
    if [ "$layout" = front ]; then
      echo "## Front-bound layout (upstream on a core of its own; nginx + wrk on the other)"
      echo
      echo "nginx and wrk saturate their core first: req/s shows nginx's ceiling more than the upstream; compare the upstreams by their CPU µs/request."
    else
      echo "## Upstream-bound layout (each upstream limited to $quota % of one CPU by a cpu cgroup, $cg_kind; $quota_why)"
      echo
      echo "The upstream saturates first — if its CPU use is at the quota; a row well below it was bound elsewhere (a busy machine) — and req/s shows the upstream's efficiency."
    fi
    echo
    echo "| upstream (behind nginx) | req/s per round | median req/s | upstream CPU µs/request per round | median | upstream CPU use, % of one CPU | nginx CPU µs/request (median) |"
    echo "|---|---|---|---|---|---|---|"
    echo "| A. c10k hosting hello.py ($py_class), uwsgi protocol, unix socket | ${a[*]} | $a_med | ${ua[*]} | $ua_med | $(use a ua) | $na_med |"
    echo "| B. uWSGI hosting hello.py, uwsgi protocol, unix socket | ${b[*]} | $b_med | ${ub[*]} | $ub_med | $(use b ub) | $nb_med |"
    echo "| C. c10k built-in app ($class), HTTP, upstream keepalive | ${c[*]} | $c_med | ${uc[*]} | $uc_med | $(use c uc) | $nc_med |"
    echo "| D. c10k built-in app ($class), uwsgi protocol, unix socket | ${d[*]} | $d_med | ${ud[*]} | $ud_med | $(use d ud) | $nd_med |"
    echo
    echo "**A/B = $(ratio "$a_med" "$b_med")** req/s (goal ≥ 1.3; median of per-round ratios $(pair a b)); upstream CPU per request A/B = $(ratio "$ua_med" "$ub_med") (goal ≤ 0.77 for 1.3× when the upstream is the bottleneck; median of per-round ratios $(pair ua ub))  "
    echo "**D/C = $(ratio "$d_med" "$c_med")** req/s (goal ≥ 1.0; median of per-round ratios $(pair d c)); upstream CPU per request D/C = $(ratio "$ud_med" "$uc_med"); nginx CPU per request D/C = $(ratio "$nd_med" "$nc_med")  "
    echo "D/B = $(ratio "$d_med" "$b_med") req/s (built-in Rust app against uWSGI running Python; median of per-round ratios $(pair d b)); upstream CPU per request D/B = $(ratio "$ud_med" "$ub_med")"
  } >> "$report"
  if [ "$layout" = front ]; then
    front_min_use=$(printf '%s\n' "$(use a ua)" "$(use b ub)" "$(use c uc)" "$(use d ud)" | sort -g | head -1)
  fi
done
failures=$(grep -c -i "error\|refused" "$tmp/logs/error.log" || true)
echo >> "$report"
echo "nginx error-log lines mentioning errors: $failures" >> "$report"
tee "$out/results.md" < "$report"
