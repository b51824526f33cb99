#!/usr/bin/env bash
# gobalancer against HAProxy and nginx on loopback, configured alike: the same three
# `loadgen serve` backends, round robin, one worker thread or process each, TCP (L4)
# mode (HAProxy `mode tcp`, nginx `stream` with `worker_processes 1`). The same loadgen
# runs against each in turn, A B C A B C ..., for BENCH_ROUNDS rounds (3 by default), and
# the table gives medians of req/s, p99, and requests per CPU-second of the proxy, with
# the ratios gobalancer/HAProxy and gobalancer/nginx (>= 1.0 means gobalancer is ahead;
# for p99, below 1.0 is better).
#
# L7 (HTTP) is not compared yet: gobalancer has no HTTP mode. When it lands, the same
# rounds run with HAProxy `mode http` and nginx `http` with upstream keep-alive.
#
# Installs haproxy, nginx and nginx's stream module from the distribution's packages
# when missing (needs root and apt-get). Settings as in scripts/bench.sh (BENCH_*), and
# BENCH_PORT (19660: gobalancer; +10 HAProxy; +20 nginx; backends +1..+3).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

PORT=${BENCH_PORT:-19660}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
GOBALANCER="$TARGET_DIR/release/gobalancer"

if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  echo "== installing haproxy and nginx (with its stream module)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx libnginx-mod-stream >/dev/null
fi

echo "== building gobalancer and loadgen (release)"
cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen

OUT=$(mktemp -d /tmp/gobalancer-peers.XXXXXX)
: >"$OUT/results.tsv"
B1=$((PORT + 1)) B2=$((PORT + 2)) B3=$((PORT + 3))
HAPROXY_PORT=$((PORT + 10)) NGINX_PORT=$((PORT + 20))

require_free_ports "$PORT" "$B1" "$B2" "$B3" "$HAPROXY_PORT" "$NGINX_PORT"
start "$OUT/backends.log" "$LOADGEN" serve --listen "127.0.0.1:$B1" --count 3 --reply http
BACKENDS_PID=$LAST_PID
for p in $B1 $B2 $B3; do wait_port "$p" "$BACKENDS_PID"; done

start "$OUT/gobalancer.log" "$GOBALANCER" --listen "127.0.0.1:$PORT" --workers 1 --log-level warn \
  --backend "127.0.0.1:$B1" --backend "127.0.0.1:$B2" --backend "127.0.0.1:$B3"
GOBALANCER_PID=$LAST_PID

cat >"$OUT/haproxy.cfg" <<CFG
global
    nbthread 1
    # Below the 20,000 open files a session may have here: HAProxy needs two per
    # connection and refuses to start if it cannot reserve them.
    maxconn 4096

defaults
    mode tcp
    timeout connect 3s
    timeout client 60s
    timeout server 60s

frontend front
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend web

backend web
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
    server b3 127.0.0.1:$B3
CFG
# -db: foreground, no daemon, so that its PID is the one that does the work.
start "$OUT/haproxy.log" haproxy -db -f "$OUT/haproxy.cfg"
HAPROXY_PID=$LAST_PID

cat >"$OUT/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
stream {
    upstream web {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        server 127.0.0.1:$B3;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_pass web;
        proxy_connect_timeout 3s;
        proxy_timeout 60s;
    }
}
CFG
# The master stays in the foreground (daemon off); its one worker is its child, and
# cpu_ticks counts both.
start "$OUT/nginx.log" nginx -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/nginx-error.log"
NGINX_PID=$LAST_PID

wait_port "$PORT" "$GOBALANCER_PID"
wait_port "$HAPROXY_PORT" "$HAPROXY_PID"
wait_port "$NGINX_PORT" "$NGINX_PID"

echo "== $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections, $BENCH_THREADS loadgen threads, $BENCH_DURATION each, L4"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  measure "$OUT" gobalancer "$round" "http://127.0.0.1:$PORT/" "$GOBALANCER_PID"
  measure "$OUT" haproxy "$round" "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID"
  measure "$OUT" nginx "$round" "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"
done

read -r g_rps g_p99 g_eff < <(medians "$OUT" gobalancer)
read -r h_rps h_p99 h_eff < <(medians "$OUT" haproxy)
read -r n_rps n_p99 n_eff < <(medians "$OUT" nginx)
echo
echo "== L4, medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine))"
echo "   $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
printf '%-28s %12s %10s %16s\n' proxy req/s p99_us "req/proxy-CPU-s"
printf '%-28s %12.0f %10.1f %16.0f\n' "gobalancer (1 worker)" "$g_rps" "$g_p99" "$g_eff"
printf '%-28s %12.0f %10.1f %16.0f\n' "HAProxy (nbthread 1)" "$h_rps" "$h_p99" "$h_eff"
printf '%-28s %12.0f %10.1f %16.0f\n' "nginx (1 worker)" "$n_rps" "$n_p99" "$n_eff"
printf '%-28s %12s %10s %16s\n' "gobalancer / HAProxy" "$(ratio "$g_rps" "$h_rps")" "$(ratio "$g_p99" "$h_p99")" "$(ratio "$g_eff" "$h_eff")"
printf '%-28s %12s %10s %16s\n' "gobalancer / nginx" "$(ratio "$g_rps" "$n_rps")" "$(ratio "$g_p99" "$n_p99")" "$(ratio "$g_eff" "$n_eff")"
echo "L7: not compared (gobalancer has no HTTP mode yet)"
echo "raw results: $OUT"
