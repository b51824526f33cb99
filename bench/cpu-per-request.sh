#!/usr/bin/env bash
# User and system CPU per request of each proxy (gobalancer --io epoll, --io uring; HAProxy),
# L7 small GETs over 32 keep-alive connections, a fixed request count per round (N, 100000),
# alternating rounds (ROUNDS, "1 2 3 4 5"); from /proc/PID/stat, so 10 ms ticks.
# Binaries from target/peers (scripts/prebuild-peers.sh), so it runs on a lent machine too.
#   bench/cpu-per-request.sh
set -u
cd "$(dirname "$0")/.."
P=$(cd target/peers && pwd)
export LD_LIBRARY_PATH="$P/lib"
B=19900
N=${N:-100000}
tick=$(getconf CLK_TCK)
cat > /tmp/cp-h.cfg <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout http-keep-alive 60s
    timeout http-request 10s
    timeout connect 3s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:$((B+20))
    default_backend web
backend web
    balance roundrobin
    server b1 127.0.0.1:$((B+1))
    server b2 127.0.0.1:$((B+2))
    server b3 127.0.0.1:$((B+3))
CFG
$P/loadgen serve --listen 127.0.0.1:$((B+1)) --count 3 --reply http >/tmp/cp-b.log 2>&1 & BP=$!
BK="--backend 127.0.0.1:$((B+1)) --backend 127.0.0.1:$((B+2)) --backend 127.0.0.1:$((B+3))"
$P/gobalancer --io epoll --mode http --listen 127.0.0.1:$B --workers 1 --log-level warn $BK >/tmp/cp-e.log 2>&1 & EP=$!
$P/gobalancer --io uring --mode http --listen 127.0.0.1:$((B+10)) --workers 1 --log-level warn $BK >/tmp/cp-u.log 2>&1 & UP=$!
$P/haproxy -db -f /tmp/cp-h.cfg >/tmp/cp-h.log 2>&1 & HP=$!
trap 'kill $BP $EP $UP $HP 2>/dev/null' EXIT
sleep 1
cpu() { awk '{print $14, $15}' /proc/$1/stat; }
for r in ${ROUNDS:-1 2 3 4 5}; do
for pair in epoll:$B:$EP uring:$((B+10)):$UP haproxy:$((B+20)):$HP; do
  IFS=: read name port pid <<<"$pair"
  $P/loadgen -q -c 32 -t 1 -d 1s http://127.0.0.1:$port/ >/dev/null 2>&1
  a=($(cpu $pid)); t0=$(date +%s.%N)
  $P/loadgen -q -c 32 -t 1 -n $N -d 60s http://127.0.0.1:$port/ > /dev/null 2>&1
  b=($(cpu $pid)); t1=$(date +%s.%N)
  awk -v r=$r -v n=$name -v u=$((b[0]-a[0])) -v s=$((b[1]-a[1])) -v k=$tick -v N=$N -v t0=$t0 -v t1=$t1 \
    'BEGIN { printf "round %s %-8s user us/req %5.2f  sys us/req %5.2f  req/s %7.0f\n", r, n, u*1e6/k/N, s*1e6/k/N, N/(t1-t0) }'
done
done
