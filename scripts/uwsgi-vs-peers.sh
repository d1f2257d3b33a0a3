#!/usr/bin/env bash
# nginx in front of seven upstreams, in the same run, loaded by wrk through nginx:
#   A. c10k hosting hello.py over the uwsgi protocol (`c10k serve hello:application`,
#      `--bind uwsgi+unix:`; class $PY_CLASS, sync by default: one Python call at a time per
#      worker, as uWSGI's default)
#   B. uWSGI hosting the same hello.py over the uwsgi protocol (`uwsgi --socket`)
#   C. c10k's built-in app over HTTP (proxy_pass with upstream keepalive)
#   D. c10k's built-in app over the uwsgi protocol
#   E. c10k hosting hello.py over HTTP (proxy_pass with upstream keepalive), class
#      $HTTP_PY_CLASS, async by default: c10k's default class, and the one a user picks for this
#      layout. Its event loop keeps nginx's idle upstream connections and runs the app on
#      --threads ($THREADS, default 1) Python threads. `-k sync` has no keep-alive (gunicorn's
#      sync), so nginx opens a connection per request and spends more than twice the CPU per
#      request on it; `-k gthread --threads 1` keeps the connections but hands every request
#      from its reactor thread to a pool thread. Measured once each (front-bound, one 3 s round,
#      a 2-CPU host busy with other builds): upstream CPU µs/request async 10, gthread 12,
#      sync 17; req/s async a little above gthread (both nginx-bound), sync a quarter of them.
#   F. gunicorn gthread hosting hello.py over HTTP (--threads $THREADS, as E's Python pool; its
#      own keep-alive, 2 s idle by default, so nginx's upstream keepalive works)
#   G. Granian hosting hello.py over HTTP (`granian --interface wsgi`; HTTP/1 keep-alive is on
#      by default; its other settings are its defaults: 1 runtime thread, the app on a pool of
#      blocking threads started as needed)
# A/B is the headline: the same WSGI app, the same protocol, the same worker count (goal ≥ 1.3).
# E/F and E/G are the most common production layout of the peers, nginx `proxy_pass` over HTTP
# with upstream keepalive to the same hello.py (goal > 1: c10k ahead of each peer).
# D/C is the issue's second goal (uwsgi ≥ HTTP with keepalive, both c10k's built-in `hello`);
# D/B (a Rust handler against uWSGI running Python) and E/A (c10k hosting hello.py over HTTP vs
# over uwsgi) are extra information.
# Rows F and G need gunicorn and Granian: $GUNICORN / $GRANIAN, else /work/venv/bin, else PATH;
# a peer that is absent is skipped and the results say why.
#
# CPUs, the same for every row: every upstream (c10k, uWSGI, gunicorn, Granian) runs on
# $SERVER_CPUS (default 0) and nothing else does; nginx (1 worker) and wrk (1 thread) share
# $FRONT_CPUS (default 1). Every upstream runs WORKERS (4th argument, default 1) worker processes.
# Only one row is loaded at a time (the others' servers sit idle). Rounds rotate the order of the
# rows.
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
# nginx's CPU µs/request; medians, ratios of medians and medians of per-round ratios. For the
# HTTP rows, a keep-alive check in their first round: of nginx's connections to the upstream,
# how many were still open 0.2 s later (all when the upstream keeps them alive, none when it
# closes after each answer). nginx's error log, after start-up, is counted and quoted.
# Writes runs/<date>-uwsgi-vs-peers/results.md (or OUT=DIR).
#
# usage: scripts/uwsgi-vs-peers.sh [REPEATS] [DURATION_SECONDS] [CONNECTIONS] [WORKERS] [CLASS] [PY_CLASS] [HTTP_PY_CLASS]
# (CLASS: c10k's --worker-class for the built-in rows C and D, async by default; PY_CLASS: for
# row A, sync by default; HTTP_PY_CLASS: for row E, async by default.) LAYOUTS="front upstream"
# (default) picks the layouts; THREADS (default 1) is row E's --threads and row F's --threads.
# uWSGI comes from $UWSGI, else $C10K_TEST_VENV/bin/uwsgi (the venv of scripts/python-venv.sh, as the
# other scripts), else /work/venv/bin/uwsgi, else PATH (pip install pyuwsgi); rows A and
# E's virtualenv is $VENV, else uWSGI's (the directory above its bin/).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-3}
duration=${2:-5}
conns=${3:-50}
workers=${4:-1}
class=${5:-async}
py_class=${6:-sync}
http_py_class=${7:-async}
threads=${THREADS:-1}
quota=${QUOTA:-}
layouts=${LAYOUTS:-front upstream}
for tool in nginx wrk taskset curl python3 ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light wrk util-linux curl python3 iproute2)" >&2; exit 2; }
done
# find_peer NAME ENV_VALUE: the peer's executable ($ENV_VALUE, else $C10K_TEST_VENV/bin/NAME, else
# /work/venv/bin/NAME, else PATH), or nothing.
find_peer() {
  if [ -n "$2" ]; then echo "$2"
  elif [ -n "${C10K_TEST_VENV:-}" ] && [ -x "$C10K_TEST_VENV/bin/$1" ]; then echo "$C10K_TEST_VENV/bin/$1"
  elif [ -x "/work/venv/bin/$1" ]; then echo "/work/venv/bin/$1"
  else command -v "$1" || true; fi
}
uwsgi=$(find_peer uwsgi "${UWSGI:-}")
if [ -z "$uwsgi" ] || [ ! -x "$uwsgi" ]; then echo "missing uWSGI: set UWSGI=/path/to/uwsgi (pip install pyuwsgi)" >&2; exit 2; fi
gunicorn=$(find_peer gunicorn "${GUNICORN:-}")
granian=$(find_peer granian "${GRANIAN:-}")
skip_f=""; skip_g=""
[ -x "${gunicorn:-/nonexistent}" ] || skip_f="no gunicorn (GUNICORN, $C10K_TEST_VENV/bin, /work/venv/bin/gunicorn or PATH; pip install gunicorn)"
[ -x "${granian:-/nonexistent}" ] || skip_g="no Granian (GRANIAN, $C10K_TEST_VENV/bin, /work/venv/bin/granian or PATH; pip install granian)"
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
  # TERM to every upstream's master and to nginx, KILL after 10 s to whatever of their trees is
  # left (a master that hangs in a graceful stop would otherwise keep `wait` here forever).
  local p all=() _ left
  for p in "${pids[@]}"; do mapfile -t -O "${#all[@]}" all < <(tree_pids "$p"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    left=0
    for p in "${all[@]}"; do running "$p" && { left=1; break; }; done
    [ "$left" = 1 ] || break
    sleep 0.1
  done
  for p in "${all[@]}"; do running "$p" && kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  # A cgroup can only be removed once empty; the processes are gone by now.
  for cg in "${cgroups[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# running PID: the process exists and is not a zombie (our children stay zombies until `wait`).
running() { local s; s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${s%% *}" != Z ]; }
# Every process of the tree under pid $1 (itself included): the upstream's master and workers,
# or nginx's master and worker.
tree_pids() {
  ps -e -o pid=,ppid= | awk -v root="$1" '{up[$1] = $2} END {
    for (x in up) { y = x; while (y != "" && y != root) y = up[y]; if (y == root) print x } }'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Upstreams listening on TCP (C's built-in app, E, F, G), then nginx's front ports (one per row).
c10k_http=$(free_port); c10k_py_http=$(free_port); gunicorn_http=$(free_port); granian_http=$(free_port)
port_a=$(free_port); port_b=$(free_port); port_c=$(free_port); port_d=$(free_port)
port_e=$(free_port); port_f=$(free_port); port_g=$(free_port)

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
# http_front NAME FRONT_PORT UPSTREAM_PORT: a front that proxies over HTTP/1.1 to an upstream
# pool with keepalive (the production layout: no connection per request). keepalive_requests as
# on the client side: with nginx's default of 1000 per upstream connection, the -c connections,
# loaded in lockstep, are all replaced at once about every second at these rates, a wave of
# reconnections that adds noise to every HTTP row and to the keep-alive check.
http_front() {
  cat <<CONF
  upstream $1 { server 127.0.0.1:$3; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$2 backlog=2048;
    location / {
      proxy_pass http://$1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
CONF
}
{
  cat <<CONF
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
CONF
  http_front c10k_http "$port_c" "$c10k_http"
  http_front c10k_py_http "$port_e" "$c10k_py_http"
  [ -n "$skip_f" ] || http_front gunicorn_http "$port_f" "$gunicorn_http"
  [ -n "$skip_g" ] || http_front granian_http "$port_g" "$granian_http"
  echo "}"
} > "$tmp/nginx.conf"

taskset -c "$server_cpus" "$bin" serve --bind "uwsgi+unix:$tmp/c10k.sock,127.0.0.1:$c10k_http" \
  --workers "$workers" --worker-class "$class" --admin off --backlog 2048 --log-level warn \
  >"$tmp/logs/c10k.log" 2>&1 &
pids+=($!); pid_c10k=$!
taskset -c "$server_cpus" "$bin" serve --bind "uwsgi+unix:$tmp/c10k-py.sock" --workers "$workers" \
  --worker-class "$py_class" --admin off --backlog 2048 --log-level warn --chdir "$tmp" --venv "$venv" \
  hello:application >"$tmp/logs/c10k-py.log" 2>&1 &
pids+=($!); pid_c10k_py=$!
taskset -c "$server_cpus" "$bin" serve --bind "127.0.0.1:$c10k_py_http" --workers "$workers" \
  --worker-class "$http_py_class" --threads "$threads" --admin off --backlog 2048 --log-level warn \
  --chdir "$tmp" --venv "$venv" hello:application >"$tmp/logs/c10k-py-http.log" 2>&1 &
pids+=($!); pid_c10k_py_http=$!
(cd "$tmp" && exec taskset -c "$server_cpus" "$uwsgi" --socket "$tmp/uwsgi.sock" --master --die-on-term --workers "$workers" \
  --listen 1024 --disable-logging --wsgi-file hello.py >"$tmp/logs/uwsgi.log" 2>&1) &
pids+=($!); pid_uwsgi=$!
pid_gunicorn=""; pid_granian=""
if [ -z "$skip_f" ]; then
  taskset -c "$server_cpus" "$gunicorn" --bind "127.0.0.1:$gunicorn_http" --workers "$workers" -k gthread \
    --threads "$threads" --backlog 2048 --graceful-timeout 5 --log-level warning --chdir "$tmp" \
    hello:application >"$tmp/logs/gunicorn.log" 2>&1 &
  pids+=($!); pid_gunicorn=$!
fi
if [ -z "$skip_g" ]; then
  taskset -c "$server_cpus" "$granian" --interface wsgi --host 127.0.0.1 --port "$granian_http" \
    --workers "$workers" --backlog 2048 --log-level warning --working-dir "$tmp" \
    hello:application >"$tmp/logs/granian.log" 2>&1 &
  pids+=($!); pid_granian=$!
fi
for _ in $(seq 100); do [ -S "$tmp/c10k.sock" ] && [ -S "$tmp/uwsgi.sock" ] && [ -S "$tmp/c10k-py.sock" ] && break; sleep 0.1; done
taskset -c "$front_cpus" nginx -p "$tmp" -c "$tmp/nginx.conf" &
pids+=($!); pid_nginx=$!

# The rows of this run: letter → front port, upstream pid, cgroup, label.
rows=(a b c d e)
declare -A port_of=([a]=$port_a [b]=$port_b [c]=$port_c [d]=$port_d [e]=$port_e [f]=$port_f [g]=$port_g)
declare -A pid_of=([a]=$pid_c10k_py [b]=$pid_uwsgi [c]=$pid_c10k [d]=$pid_c10k [e]=$pid_c10k_py_http
  [f]=$pid_gunicorn [g]=$pid_granian)
# C and D are one c10k process (both binds), so one cgroup.
declare -A cg_name=([a]=c10k_py [b]=uwsgi [c]=c10k [d]=c10k [e]=c10k_py_http [f]=gunicorn [g]=granian)
declare -A upstream_port=([c]=$c10k_http [e]=$c10k_py_http [f]=$gunicorn_http [g]=$granian_http)
declare -A label=(
  [a]="A. c10k hosting hello.py ($py_class), uwsgi protocol, unix socket"
  [b]="B. uWSGI hosting hello.py, uwsgi protocol, unix socket"
  [c]="C. c10k built-in app ($class), HTTP, upstream keepalive"
  [d]="D. c10k built-in app ($class), uwsgi protocol, unix socket"
  [e]="E. c10k hosting hello.py ($http_py_class, --threads $threads), HTTP, upstream keepalive"
  [f]="F. gunicorn gthread hosting hello.py (--threads $threads), HTTP, upstream keepalive"
  [g]="G. Granian hosting hello.py (--interface wsgi), HTTP, upstream keepalive"
)
[ -n "$skip_f" ] || rows+=(f)
[ -n "$skip_g" ] || rows+=(g)

wait_up() {
  for _ in $(seq 150); do
    [ "$(curl -s "http://127.0.0.1:$1/" || true)" = "hello" ] && return 0
    sleep 0.1
  done
  echo "nothing answers hello on $1; logs:" >&2; tail -n 5 "$tmp"/logs/* >&2; exit 1
}
for r in "${rows[@]}"; do wait_up "${port_of[$r]}"; done
# The probes above may have met an upstream not yet listening (nginx logs a refused connect);
# only what the error log says after them counts.
startup_errors=$( (wc -l < "$tmp/logs/error.log") 2>/dev/null || echo 0)

# CPU time (clock ticks, user + system) of a process and all its descendants. Req/s alone cannot
# tell an upstream that is cheaper from one that waits for a saturated front; CPU per request can.
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
# The distinct cgroups of this run's rows.
cg_names=()
for r in "${rows[@]}"; do
  [[ " ${cg_names[*]} " == *" ${cg_name[$r]} "* ]] || cg_names+=("${cg_name[$r]}")
done
if [ -n "$cg_kind" ]; then
  for r in "${rows[@]}"; do
    name=${cg_name[$r]}; cg=$(cg_of "$name")
    [ -d "$cg" ] && continue
    mkdir "$cg"; cgroups+=("$cg")
    cg_limit "$name" max
    # Every process of the upstream's tree (master and workers, with their threads).
    for p in $(tree_pids "${pid_of[$r]}"); do echo "$p" > "$cg/cgroup.procs" 2>/dev/null || true; done
  done
else
  layouts=${layouts//upstream/}
fi
set_quota() { [ -n "$cg_kind" ] || return 0; local n; for n in "${cg_names[@]}"; do cg_limit "$n" "$1"; done; }

# Loads the front on port $1 and prints "req/s upstream-µs/request nginx-µs/request" (upstream =
# the tree of pid $2). With an upstream TCP port $3: also writes to $tmp/kept "N K": nginx had N
# connections open to it a quarter into the load, K of them still open 0.2 s later (see row).
run_wrk() {
  local t0 t1 n0 n1 out probe=""
  t0=$(tree_ticks "$2"); n0=$(tree_ticks "$pid_nginx")
  if [ -n "${3:-}" ]; then
    (sleep "$(awk -v d="$duration" 'BEGIN {print d / 4}')"; conn_inodes "$3" > "$tmp/ino1"
     sleep 0.2; conn_inodes "$3" > "$tmp/ino2"
     echo "$(wc -l < "$tmp/ino1") $(comm -12 "$tmp/ino1" "$tmp/ino2" | wc -l)" > "$tmp/kept") &
    probe=$!
  fi
  out=$(taskset -c "$front_cpus" wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/")
  [ -z "$probe" ] || wait "$probe"
  t1=$(tree_ticks "$2"); n1=$(tree_ticks "$pid_nginx")
  awk -v t="$((t1 - t0))" -v g="$((n1 - n0))" -v hz="$hz" '/requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%s %.1f %.1f\n", r, (n > 0 ? t * 1e6 / hz / n : 0), (n > 0 ? g * 1e6 / hz / n : 0)}' <<<"$out"
}
# The socket inodes (one per connection, never reused soon) of nginx's open connections to
# upstream port $1, sorted.
conn_inodes() { ss -Htne state established "( dport = :$1 )" | grep -o 'ino:[0-9]*' | sort; }
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

out=${OUT:-runs/$(date -u +%Y-%m-%d)-uwsgi-vs-peers}
mkdir -p "$out"
report="$tmp/report.md"
version_f="skipped, $skip_f"; version_g="skipped, $skip_g"
[ -n "$skip_f" ] || version_f="gunicorn $("$gunicorn" --version 2>&1 | grep -o '[0-9][0-9.]*' | head -1): --workers $workers -k gthread --threads $threads"
[ -n "$skip_g" ] || version_g="Granian $("$granian" --version 2>&1 | grep -o '[0-9][0-9.]*' | head -1): --workers $workers --interface wsgi"
{
  echo "# Behind nginx: c10k vs uWSGI over uwsgi, c10k vs gunicorn and Granian over HTTP"
  echo
  echo "Command: \`scripts/uwsgi-vs-peers.sh $repeats $duration $conns $workers $class $py_class $http_py_class\` (QUOTA=${QUOTA:-auto}, LAYOUTS=\"${LAYOUTS:-front upstream}\", THREADS=$threads)  "
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)  "
  echo "Upstreams pinned to CPU $server_cpus; nginx $(nginx -v 2>&1 | cut -d/ -f2) (1 worker) and wrk -t1 -c$conns -d${duration}s pinned to CPU $front_cpus; $repeats rounds per layout, order rotated.  "
  echo "c10k: --workers $workers; built-in app (C, D) --worker-class $class; hello.py over uwsgi (A) --worker-class $py_class; hello.py over HTTP (E) --worker-class $http_py_class --threads $threads. uWSGI $("$uwsgi" --version): --workers $workers, hello.py.  "
  echo "F: $version_f. G: $version_g."
} > "$report"

# row R: one wrk run of row R, its figures appended to rps_R, up_R (upstream µs/request) and
# ngx_R (nginx µs/request). The first run of an HTTP row also checks keep-alive: kept[R] is
# "N K", N connections nginx had open to the upstream, K of them still open 0.2 s later. With
# keep-alive K is N; without, a connection lives for one request, milliseconds, and K is 0.
declare -A kept
row() {
  local r u g probe=""
  local -n rps=rps_$1 up=up_$1 ngx=ngx_$1
  if [ -n "${upstream_port[$1]:-}" ] && [ -z "${kept[$1]:-}" ]; then probe=${upstream_port[$1]}; fi
  read -r r u g < <(run_wrk "${port_of[$1]}" "${pid_of[$1]}" "$probe")
  rps+=("$r"); up+=("$u"); ngx+=("$g")
  [ -z "$probe" ] || kept[$1]=$(cat "$tmp/kept")
}
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
  for r in "${rows[@]}"; do declare -a "rps_$r=()" "up_$r=()" "ngx_$r=()"; done
  for i in $(seq "$repeats"); do
    # Rotate the order so drift (thermal, noise) does not favour one side.
    n=${#rows[@]}; line=""
    for k in $(seq 0 $((n - 1))); do
      r=${rows[$(((k + i - 1) % n))]}
      row "$r"
      declare -n rr=rps_$r uu=up_$r
      line+=" ${r^^} ${rr[-1]} (${uu[-1]})"
      unset -n rr uu
    done
    echo "$layout round $i, req/s (upstream µs CPU/req):$line" >&2
  done
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
    # Medians of this layout: req/s, upstream and nginx CPU µs/request.
    declare -A m=() um=() nm=()
    for r in a b c d e f g; do
      if [[ " ${rows[*]} " != *" $r "* ]]; then
        skip=skip_$r
        echo "| ${label[$r]} | skipped: ${!skip} | | | | | |"
        continue
      fi
      declare -n rr=rps_$r uu=up_$r gg=ngx_$r
      m[$r]=$(med "${rr[@]}"); um[$r]=$(med "${uu[@]}"); nm[$r]=$(med "${gg[@]}")
      echo "| ${label[$r]} | ${rr[*]} | ${m[$r]} | ${uu[*]} | ${um[$r]} | $(use "rps_$r" "up_$r") | ${nm[$r]} |"
      unset -n rr uu gg
    done
    echo
    echo "**A/B = $(ratio "${m[a]}" "${m[b]}")** req/s (goal ≥ 1.3; median of per-round ratios $(pair rps_a rps_b)); upstream CPU per request A/B = $(ratio "${um[a]}" "${um[b]}") (goal ≤ 0.77 for 1.3× when the upstream is the bottleneck; median of per-round ratios $(pair up_a up_b))  "
    for peer in f g; do
      name=gunicorn; [ "$peer" = g ] && name=Granian
      if [[ " ${rows[*]} " == *" $peer "* ]]; then
        echo "**E/${peer^^} = $(ratio "${m[e]}" "${m[$peer]}")** req/s (c10k vs $name, both over HTTP with upstream keepalive; goal > 1; median of per-round ratios $(pair rps_e "rps_$peer")); upstream CPU per request E/${peer^^} = $(ratio "${um[e]}" "${um[$peer]}") (median of per-round ratios $(pair up_e "up_$peer"))  "
      else
        skip=skip_$peer
        echo "E/${peer^^}: not measured (${!skip})  "
      fi
    done
    echo "**D/C = $(ratio "${m[d]}" "${m[c]}")** req/s (goal ≥ 1.0; median of per-round ratios $(pair rps_d rps_c)); upstream CPU per request D/C = $(ratio "${um[d]}" "${um[c]}"); nginx CPU per request D/C = $(ratio "${nm[d]}" "${nm[c]}")  "
    echo "D/B = $(ratio "${m[d]}" "${m[b]}") req/s (built-in Rust app against uWSGI running Python; median of per-round ratios $(pair rps_d rps_b)); upstream CPU per request D/B = $(ratio "${um[d]}" "${um[b]}")  "
    echo "E/A = $(ratio "${m[e]}" "${m[a]}") req/s (c10k hosting hello.py over HTTP with keepalive vs over uwsgi; median of per-round ratios $(pair rps_e rps_a)); upstream CPU per request E/A = $(ratio "${um[e]}" "${um[a]}")"
  } >> "$report"
  if [ "$layout" = front ]; then
    front_min_use=$(for r in "${rows[@]}"; do use "rps_$r" "up_$r"; echo; done | sort -g | head -1)
  fi
done
{
  echo
  echo "Keep-alive check, each HTTP row's first round (nginx's connections to the upstream a quarter into the load, and how many of them were still open 0.2 s later: nearly all when the upstream keeps them alive, none when it closes after each answer):"
  echo
  for r in c e f g; do
    [ -n "${kept[$r]:-}" ] || continue
    read -r n k <<<"${kept[$r]}"
    echo "- ${label[$r]}: $k of $n still open"
  done
  echo
  # The lines after the start-up probes, counted and (the first few kinds) shown.
  tail -n +$((startup_errors + 1)) "$tmp/logs/error.log" 2>/dev/null | grep -i "error\|refused" > "$tmp/errors" || true
  failures=$(wc -l < "$tmp/errors")
  echo "nginx error-log lines mentioning errors (after start-up): $failures"
  if [ "$failures" -gt 0 ]; then
    echo
    echo '```'
    # Without the time stamp, pid and connection number, so that repeats collapse.
    sed 's/^[0-9/: ]*\[[a-z]*\] [0-9#]*: \*[0-9]* //' "$tmp/errors" | cut -c1-200 | sort | uniq -c | sort -rn | head -10
    echo '```'
  fi
} >> "$report"
tee "$out/results.md" < "$report"
