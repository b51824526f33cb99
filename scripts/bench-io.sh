#!/usr/bin/env bash
# io_uring against epoll through the L4 or the L7 proxy, on loopback: two gobalancer processes, one
# `--io epoll` and one `--io uring` (one worker each), over the same three `loadgen serve`
# backends. Rounds alternate the two, so that noise on a shared machine hits both alike;
# the table shows medians of requests per second, p99 latency and requests per proxy
# CPU-second, with the uring/epoll ratio of each.
#
# Settings (environment) as for scripts/bench.sh: BENCH_DURATION (5s), BENCH_WARMUP (1s),
# BENCH_CONNECTIONS (32), BENCH_THREADS (1), BENCH_ROUNDS (3), BENCH_PORT (19600: the epoll
# proxy; the uring proxy on +10, the backends on +1..+3). BENCH_NEW_CONN=1: a new
# connection for every request (accept, connect, shutdown and close on each).
# BENCH_MODE: tcp (L4, the default) or http (L7: listeners in `--mode http`, pooled
# keep-alive connections to the backends).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

PORT=${BENCH_PORT:-19600}
MODE=${BENCH_MODE:-tcp}
case "$MODE" in
  tcp) LAYER=L4 ;;
  http) LAYER=L7 ;;
  *) echo "BENCH_MODE must be tcp or http, not '$MODE'" >&2; exit 2 ;;
esac
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
GOBALANCER="$TARGET_DIR/release/gobalancer"

# BENCH_PREBUILT=DIR: gobalancer and loadgen from DIR (scripts/prebuild-peers.sh), nothing
# built: for a lent benchmark machine without a toolchain.
PREBUILT=${BENCH_PREBUILT:-}
if [ -n "$PREBUILT" ]; then
  LOADGEN="$(cd "$PREBUILT" && pwd)/loadgen"
  GOBALANCER="$(cd "$PREBUILT" && pwd)/gobalancer"
fi

require_free_ports "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)) $((PORT + 10))

if [ -z "$PREBUILT" ]; then
  echo "== building gobalancer and loadgen (release)"
  cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen
fi

OUT=$(mktemp -d /tmp/gobalancer-bench-io.XXXXXX)
: >"$OUT/results.tsv"
if [ "${BENCH_NEW_CONN:-0}" = 1 ]; then
  # measure() runs "$LOADGEN" with its own flags: add ours through a wrapper.
  printf '#!/bin/sh\nexec %q --new-conn "$@"\n' "$(realpath "$LOADGEN")" >"$OUT/loadgen-new-conn"
  chmod +x "$OUT/loadgen-new-conn"
  LOADGEN_SERVE="$LOADGEN"
  LOADGEN="$OUT/loadgen-new-conn"
fi

start "$OUT/backends.log" "${LOADGEN_SERVE:-$LOADGEN}" serve --listen "127.0.0.1:$((PORT + 1))" --count 3 --reply http
for i in 1 2 3; do wait_port $((PORT + i)); done

backends=(--backend "127.0.0.1:$((PORT + 1))" --backend "127.0.0.1:$((PORT + 2))" --backend "127.0.0.1:$((PORT + 3))")
start "$OUT/epoll.log" "$GOBALANCER" --io epoll --mode "$MODE" --listen "127.0.0.1:$PORT" --workers 1 --log-level warn "${backends[@]}"
EPOLL_PID=$LAST_PID
start "$OUT/uring.log" "$GOBALANCER" --io uring --mode "$MODE" --listen "127.0.0.1:$((PORT + 10))" --workers 1 --log-level warn \
  "${backends[@]}"
URING_PID=$LAST_PID
wait_port "$PORT"
wait_port $((PORT + 10))

echo "== $LAYER, $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections$([ "${BENCH_NEW_CONN:-0}" = 1 ] && echo ' (a new one per request)'), $BENCH_THREADS loadgen threads, $BENCH_DURATION each"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  measure "$OUT" epoll "$round" "http://127.0.0.1:$PORT/" "$EPOLL_PID"
  measure "$OUT" uring "$round" "http://127.0.0.1:$((PORT + 10))/" "$URING_PID"
done

read -r e_rps e_p99 e_eff < <(medians "$OUT" epoll)
read -r u_rps u_p99 u_eff < <(medians "$OUT" uring)
echo
echo "== medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine))"
printf '%-26s %12s %10s %16s\n' run req/s p99_us "req/proxy-CPU-s"
printf '%-26s %12.0f %10.1f %16.0f\n' "$LAYER --io epoll (1 worker)" "$e_rps" "$e_p99" "$e_eff"
printf '%-26s %12.0f %10.1f %16.0f\n' "$LAYER --io uring (1 worker)" "$u_rps" "$u_p99" "$u_eff"
printf '%-26s %12s %10s %16s\n' "uring / epoll" "$(ratio "$u_rps" "$e_rps")" "$(ratio "$u_p99" "$e_p99")" \
  "$(ratio "$u_eff" "$e_eff")"
echo "raw results: $OUT"
