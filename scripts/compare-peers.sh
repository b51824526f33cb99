#!/usr/bin/env bash
# gobalancer against HAProxy and nginx on loopback, configured alike: the same three
# `loadgen serve` backends, round robin, one worker thread or process each. Two modes:
#
#   tcp (L4):  gobalancer's default mode, HAProxy `mode tcp`, nginx `stream`.
#   http (L7): gobalancer `--mode http`, HAProxy `mode http` with `option
#              http-keep-alive` and `http-reuse always`, nginx `http` with an upstream
#              `keepalive 64`, `proxy_http_version 1.1` and `Connection ""`. All three
#              pool and reuse their backend connections, keep client connections alive
#              without a request limit, and add X-Forwarded-For (gobalancer always
#              does; HAProxy `option forwardfor`, nginx `proxy_set_header`).
#
# In each mode the same loadgen (small keep-alive GETs, BENCH_CONNECTIONS connections)
# runs against each proxy in turn, A B C A B C ..., for BENCH_ROUNDS rounds (3 by
# default), and the table gives medians of req/s, p99, and requests per CPU-second of
# the proxy, with the ratios gobalancer/HAProxy and gobalancer/nginx (>= 1.0 means
# gobalancer is ahead; for p99, below 1.0 is better). The proxies of one mode run only
# during that mode's rounds.
#
# Installs haproxy, nginx and nginx's stream module from the distribution's packages
# when missing (needs root and apt-get). Settings as in scripts/bench.sh (BENCH_*),
# BENCH_MODE (`tcp`, `http`, or `both`, the default: tcp first, then http), and
# BENCH_PORT (19660: gobalancer; +10 HAProxy; +20 nginx; backends +1..+3; the http
# mode's proxies on +30, +40, +50).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

PORT=${BENCH_PORT:-19660}
BENCH_MODE=${BENCH_MODE:-both}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
GOBALANCER="$TARGET_DIR/release/gobalancer"
# BENCH_PREBUILT=DIR: a machine without a toolchain or a package mirror (a lent
# benchmark machine): gobalancer, loadgen, haproxy and nginx are taken from DIR (their
# libraries from DIR/lib), nothing is built or installed. Only BENCH_MODE=http, which
# needs no nginx module.
PREBUILT=${BENCH_PREBUILT:-}
if [ -n "$PREBUILT" ]; then
  PREBUILT=$(cd "$PREBUILT" && pwd)
  LOADGEN="$PREBUILT/loadgen"
  GOBALANCER="$PREBUILT/gobalancer"
  export PATH="$PREBUILT:$PATH" LD_LIBRARY_PATH="$PREBUILT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

case "$BENCH_MODE" in
  tcp | http) MODES=("$BENCH_MODE") ;;
  both) MODES=(tcp http) ;;
  *)
    echo "BENCH_MODE must be tcp, http or both, not \"$BENCH_MODE\"" >&2
    exit 1
    ;;
esac

if [ -z "$PREBUILT" ]; then
  if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    echo "== installing haproxy and nginx (with its stream module)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx libnginx-mod-stream >/dev/null
  fi

  echo "== building gobalancer and loadgen (release)"
  cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen
fi

OUT=$(mktemp -d /tmp/gobalancer-peers.XXXXXX)
: >"$OUT/results.tsv"
B1=$((PORT + 1)) B2=$((PORT + 2)) B3=$((PORT + 3))

require_free_ports "$B1" "$B2" "$B3"
for mode in "${MODES[@]}"; do
  if [ "$mode" = tcp ]; then base=$PORT; else base=$((PORT + 30)); fi
  require_free_ports "$base" $((base + 10)) $((base + 20))
done

start "$OUT/backends.log" "$LOADGEN" serve --listen "127.0.0.1:$B1" --count 3 --reply http
BACKENDS_PID=$LAST_PID
for p in $B1 $B2 $B3; do wait_port "$p" "$BACKENDS_PID"; done

# stop PID...: ends these processes (started here) and waits for them, so that the
# next mode's rounds run without them.
stop() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# gobalancer_failed MODE: reports a gobalancer that has exited or failed, with its log.
gobalancer_failed() {
  echo "gobalancer ($1 mode) failed$(kill -0 "$GOBALANCER_PID" 2>/dev/null || echo ' (the process has exited)'); the end of its log ($OUT/gobalancer-$1.log):" >&2
  tail -n 40 "$OUT/gobalancer-$1.log" >&2
  exit 1
}

# run_mode MODE: starts the three proxies in MODE (tcp or http), runs the rounds, prints
# the table, stops them.
run_mode() {
  local mode=$1 base label haproxy_mode
  if [ "$mode" = tcp ]; then base=$PORT label=L4; else base=$((PORT + 30)) label=L7; fi
  local gport=$base hport=$((base + 10)) nport=$((base + 20))

  start "$OUT/gobalancer-$mode.log" "$GOBALANCER" --listen "127.0.0.1:$gport" --mode "$mode" --workers 1 \
    --log-level warn --backend "127.0.0.1:$B1" --backend "127.0.0.1:$B2" --backend "127.0.0.1:$B3"
  GOBALANCER_PID=$LAST_PID

  if [ "$mode" = tcp ]; then
    haproxy_mode="    mode tcp"
  else
    # http-reuse always: an idle backend connection serves any request, as
    # gobalancer's pool does (safe would keep each session's first request apart).
    haproxy_mode="    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout http-keep-alive 60s
    timeout http-request 10s"
  fi
  cat >"$OUT/haproxy-$mode.cfg" <<CFG
global
    nbthread 1
    # Below the 20,000 open files a session may have here: HAProxy needs two per
    # connection and refuses to start if it cannot reserve them.
    maxconn 4096

defaults
$haproxy_mode
    timeout connect 3s
    timeout client 60s
    timeout server 60s

frontend front
    bind 127.0.0.1:$hport
    default_backend web

backend web
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
    server b3 127.0.0.1:$B3
CFG
  # -db: foreground, no daemon, so that its PID is the one that does the work.
  start "$OUT/haproxy-$mode.log" haproxy -db -f "$OUT/haproxy-$mode.cfg"
  HAPROXY_PID=$LAST_PID

  mkdir -p "$OUT/nginx-$mode"
  if [ "$mode" = tcp ]; then
    cat >"$OUT/nginx-$mode.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $OUT/nginx-$mode/nginx.pid;
error_log $OUT/nginx-$mode/error.log warn;
events { worker_connections 4096; }
stream {
    upstream web {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        server 127.0.0.1:$B3;
    }
    server {
        listen 127.0.0.1:$nport;
        proxy_pass web;
        proxy_connect_timeout 3s;
        proxy_timeout 60s;
    }
}
CFG
  else
    # keepalive_requests: nginx otherwise closes a client (and an upstream) connection
    # after 1000 requests, which HAProxy and gobalancer do not.
    cat >"$OUT/nginx-$mode.conf" <<CFG
worker_processes 1;
daemon off;
pid $OUT/nginx-$mode/nginx.pid;
error_log $OUT/nginx-$mode/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream web {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        server 127.0.0.1:$B3;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$nport;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_connect_timeout 3s;
            proxy_read_timeout 60s;
        }
    }
}
CFG
  fi
  # The master stays in the foreground (daemon off); its one worker is its child, and
  # cpu_ticks counts both.
  start "$OUT/nginx-$mode.log" nginx -p "$OUT/nginx-$mode" -c "$OUT/nginx-$mode.conf" -e "$OUT/nginx-$mode/error.log"
  NGINX_PID=$LAST_PID

  wait_port "$gport" "$GOBALANCER_PID" || gobalancer_failed "$mode"
  wait_port "$hport" "$HAPROXY_PID"
  wait_port "$nport" "$NGINX_PID"

  echo "== $label: $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections, $BENCH_THREADS loadgen threads, $BENCH_DURATION each"
  local round
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    measure "$OUT" "gobalancer-$mode" "$round" "http://127.0.0.1:$gport/" "$GOBALANCER_PID" || gobalancer_failed "$mode"
    kill -0 "$GOBALANCER_PID" 2>/dev/null || gobalancer_failed "$mode"
    measure "$OUT" "haproxy-$mode" "$round" "http://127.0.0.1:$hport/" "$HAPROXY_PID"
    measure "$OUT" "nginx-$mode" "$round" "http://127.0.0.1:$nport/" "$NGINX_PID"
  done
  if [ -s "$OUT/gobalancer-$mode.log" ]; then
    echo "   gobalancer ($mode) logged warnings or errors: $(wc -l <"$OUT/gobalancer-$mode.log") lines in $OUT/gobalancer-$mode.log; the first:"
    head -n 5 "$OUT/gobalancer-$mode.log" | sed 's/^/     /'
  fi

  local g_rps g_p99 g_eff h_rps h_p99 h_eff n_rps n_p99 n_eff
  read -r g_rps g_p99 g_eff < <(medians "$OUT" "gobalancer-$mode")
  read -r h_rps h_p99 h_eff < <(medians "$OUT" "haproxy-$mode")
  read -r n_rps n_p99 n_eff < <(medians "$OUT" "nginx-$mode")
  echo
  echo "== $label ($mode), medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine))"
  echo "   $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
  printf '%-28s %12s %10s %16s\n' proxy req/s p99_us "req/proxy-CPU-s"
  printf '%-28s %12.0f %10.1f %16.0f\n' "gobalancer (1 worker)" "$g_rps" "$g_p99" "$g_eff"
  printf '%-28s %12.0f %10.1f %16.0f\n' "HAProxy (nbthread 1)" "$h_rps" "$h_p99" "$h_eff"
  printf '%-28s %12.0f %10.1f %16.0f\n' "nginx (1 worker)" "$n_rps" "$n_p99" "$n_eff"
  printf '%-28s %12s %10s %16s\n' "gobalancer / HAProxy" "$(ratio "$g_rps" "$h_rps")" "$(ratio "$g_p99" "$h_p99")" "$(ratio "$g_eff" "$h_eff")"
  printf '%-28s %12s %10s %16s\n' "gobalancer / nginx" "$(ratio "$g_rps" "$n_rps")" "$(ratio "$g_p99" "$n_p99")" "$(ratio "$g_eff" "$n_eff")"
  echo

  stop "$GOBALANCER_PID" "$HAPROXY_PID" "$NGINX_PID"
}

for mode in "${MODES[@]}"; do
  run_mode "$mode"
done
echo "raw results: $OUT"
