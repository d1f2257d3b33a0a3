#!/usr/bin/env bash
# nginx in front of three upstreams, in the same run, loaded by wrk through nginx:
#   A. c10k over the uwsgi protocol   (uwsgi_pass unix:c10k.sock, `--bind uwsgi+unix:`)
#   B. uWSGI over the uwsgi protocol  (uwsgi_pass unix:uwsgi.sock, `uwsgi --socket`)
#   C. c10k over HTTP                 (proxy_pass with upstream keepalive)
#   D. c10k hosting the same WSGI app as uWSGI, over the uwsgi protocol (`c10k serve hello:application`,
#      sync class: one Python call at a time per worker, as uWSGI's default)
# Same worker count for c10k and uWSGI; the app answers `hello\n` (c10k's built-in `/` in A and C,
# a three-line WSGI app under uWSGI and in D).
#
# CPUs, the same for every row: every upstream (c10k, uWSGI) runs on $SERVER_CPUS (default 0) and
# nothing else does; nginx (1 worker) and wrk (1 thread) share $FRONT_CPUS (default 1). The
# upstream is what is compared, so it gets a core of its own, and the front (nginx + wrk) costs the
# same in every row. Only one row is loaded at a time (the others' servers sit idle). Rounds rotate
# the order of the rows. Prints req/s per round, medians and the ratios A/B (goal ≥ 1.3) and A/C
# (goal ≥ 1.0), also as medians of per-round ratios, and writes them under runs/.
#
# usage: scripts/uwsgi-vs-peers.sh [REPEATS] [DURATION_SECONDS] [CONNECTIONS] [WORKERS] [CLASS]
# (CLASS: c10k's --worker-class for A and C, async by default)
# uWSGI comes from $UWSGI, else /work/venv/bin/uwsgi, else PATH (pip install pyuwsgi); row D's
# virtualenv is $VENV, else uWSGI's (the directory above its bin/).
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-3}
duration=${2:-5}
conns=${3:-50}
workers=${4:-1}
class=${5:-async}
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
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
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
    listen 127.0.0.1:$port_a backlog=2048;
    location / { include uwsgi_params; uwsgi_pass unix:$tmp/c10k.sock; }
  }
  server {
    listen 127.0.0.1:$port_b backlog=2048;
    location / { include uwsgi_params; uwsgi_pass unix:$tmp/uwsgi.sock; }
  }
  server {
    listen 127.0.0.1:$port_d backlog=2048;
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
  --worker-class sync --admin off --backlog 2048 --log-level warn --chdir "$tmp" --venv "$venv" \
  hello:application >"$tmp/logs/c10k-py.log" 2>&1 &
pids+=($!); pid_c10k_py=$!
(cd "$tmp" && exec taskset -c "$server_cpus" "$uwsgi" --socket "$tmp/uwsgi.sock" --master --die-on-term --workers "$workers" \
  --listen 1024 --disable-logging --wsgi-file hello.py >"$tmp/logs/uwsgi.log" 2>&1) &
pids+=($!); pid_uwsgi=$!
for _ in $(seq 100); do [ -S "$tmp/c10k.sock" ] && [ -S "$tmp/uwsgi.sock" ] && [ -S "$tmp/c10k-py.sock" ] && break; sleep 0.1; done
taskset -c "$front_cpus" nginx -p "$tmp" -c "$tmp/nginx.conf" &
pids+=($!)

wait_up() {
  for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$1/" || true)" = "hello" ] && return 0
    sleep 0.1
  done
  echo "nothing answers hello on $1; logs:" >&2; tail -n 5 "$tmp"/logs/* >&2; exit 1
}
for p in "$port_a" "$port_b" "$port_c" "$port_d"; do wait_up "$p"; done

# CPU time (clock ticks, user + system) of a process and all its descendants: the upstream's
# master and workers. Req/s alone cannot tell an upstream that is cheaper from one that waits for
# a saturated front; CPU per request can.
tree_ticks() {
  local p
  for p in $(ps -e -o pid=,ppid= | awk -v root="$1" '{up[$1] = $2} END {
      for (x in up) { y = x; while (y != "" && y != root) y = up[y]; if (y == root) print x } }'); do
    sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}'
  done | awk '{s += $1} END {print s + 0}'
}
hz=$(getconf CLK_TCK)
# Loads the front on port $1 and prints "req/s upstream-CPU-µs-per-request" (upstream = pid $2).
run_wrk() {
  local t0 t1 out
  t0=$(tree_ticks "$2")
  out=$(taskset -c "$front_cpus" wrk -t1 -c"$conns" -d"${duration}s" "http://127.0.0.1:$1/")
  t1=$(tree_ticks "$2")
  awk -v t="$((t1 - t0))" -v hz="$hz" '/requests in/ {n = $1} /Requests\/sec/ {r = $2}
    END {printf "%s %.1f\n", r, (n > 0 ? t * 1e6 / hz / n : 0)}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

a=(); b=(); c=(); d=(); ua=(); ub=(); uc=(); ud=()
row() {
  local r
  case $1 in
    a) read -r r u < <(run_wrk "$port_a" "$pid_c10k"); a+=("$r"); ua+=("$u") ;;
    b) read -r r u < <(run_wrk "$port_b" "$pid_uwsgi"); b+=("$r"); ub+=("$u") ;;
    c) read -r r u < <(run_wrk "$port_c" "$pid_c10k"); c+=("$r"); uc+=("$u") ;;
    d) read -r r u < <(run_wrk "$port_d" "$pid_c10k_py"); d+=("$r"); ud+=("$u") ;;
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
  echo "round $i: c10k/uwsgi ${a[-1]} (${ua[-1]} µs CPU/req), uWSGI/uwsgi ${b[-1]} (${ub[-1]}), c10k/HTTP ${c[-1]} (${uc[-1]}), c10k-WSGI/uwsgi ${d[-1]} (${ud[-1]}) req/s" >&2
done
med() { printf '%s\n' "$@" | median; }
a_med=$(med "${a[@]}"); b_med=$(med "${b[@]}"); c_med=$(med "${c[@]}"); d_med=$(med "${d[@]}")
ua_med=$(med "${ua[@]}"); ub_med=$(med "${ub[@]}"); uc_med=$(med "${uc[@]}"); ud_med=$(med "${ud[@]}")
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", (y > 0 ? x/y : 0)}'; }
# Per-round ratios (both sides measured back to back) are steadier on a drifting host.
pair() {
  local -n xs=$1 ys=$2
  printf '%.2f' "$(for i in "${!xs[@]}"; do awk -v x="${xs[$i]}" -v y="${ys[$i]}" 'BEGIN {print (y > 0 ? x/y : 0)}'; done | median)"
}
ab=$(ratio "$a_med" "$b_med"); ac=$(ratio "$a_med" "$c_med"); db=$(ratio "$d_med" "$b_med")
ab_pair=$(pair a b); ac_pair=$(pair a c); db_pair=$(pair d b)
failures=$(grep -c -i "error\|refused" "$tmp/logs/error.log" || true)

out="runs/$(date -u +%Y-%m-%d)-uwsgi-vs-peers"
mkdir -p "$out"
{
  echo "# nginx → c10k over uwsgi vs nginx → uWSGI over uwsgi vs nginx → c10k over HTTP"
  echo
  echo "Command: \`scripts/uwsgi-vs-peers.sh $repeats $duration $conns $workers $class\`  "
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)  "
  echo "Upstreams pinned to CPU $server_cpus; nginx $(nginx -v 2>&1 | cut -d/ -f2) (1 worker) and wrk -t1 -c$conns -d${duration}s pinned to CPU $front_cpus; $repeats rounds, order rotated."
  echo "c10k: --worker-class $class --workers $workers. uWSGI $("$uwsgi" --version): --workers $workers, hello.py."
  echo
  echo "| upstream (behind nginx) | req/s per round | median req/s | upstream CPU µs/request per round | median |"
  echo "|---|---|---|---|---|"
  echo "| A. c10k, uwsgi protocol, unix socket | ${a[*]} | $a_med | ${ua[*]} | $ua_med |"
  echo "| B. uWSGI, uwsgi protocol, unix socket | ${b[*]} | $b_med | ${ub[*]} | $ub_med |"
  echo "| C. c10k, HTTP, upstream keepalive | ${c[*]} | $c_med | ${uc[*]} | $uc_med |"
  echo "| D. c10k hosting hello.py (sync), uwsgi protocol, unix socket | ${d[*]} | $d_med | ${ud[*]} | $ud_med |"
  echo
  echo "**A/B = $ab** (goal ≥ 1.3; median of per-round ratios $ab_pair)  "
  echo "**A/C = $ac** (goal ≥ 1.0; median of per-round ratios $ac_pair)  "
  echo "D/B = $db (the same Python app under c10k and uWSGI; median of per-round ratios $db_pair)  "
  echo "Upstream CPU per request, B/A = $(ratio "$ub_med" "$ua_med") (how many times the CPU uWSGI spends per request c10k spends; > 1: c10k is cheaper)  "
  echo "nginx error-log lines mentioning errors: $failures"
} | tee "$out/results.md"
