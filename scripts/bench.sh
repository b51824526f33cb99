#!/usr/bin/env bash
# End-to-end benchmark on loopback: loadgen -> gobalancer (one worker, release build) ->
# three `loadgen serve` backends, against loadgen -> one backend directly. Rounds
# alternate direct and proxied runs (noise on a shared machine hits both alike) and the
# table shows medians: requests per second, p99 latency, and requests per CPU-second of
# the proxy, with req/s and p99 as ratios to the direct run.
#
# Two proxies over the same backends: an L4 (`--mode tcp`) one on BENCH_PORT and an L7
# (`--mode http`) one on BENCH_PORT + 10; each round runs direct, L4, L7.
#
# Settings (environment): BENCH_DURATION (5s), BENCH_WARMUP (1s, a separate unmeasured
# run before each measured one), BENCH_CONNECTIONS (32), BENCH_THREADS (1, loadgen
# threads), BENCH_ROUNDS (3), BENCH_PORT (19500: the L4 proxy; backends on +1..+3; the L7
# proxy on +10). Takes about BENCH_ROUNDS * 3 * (warm-up + duration), 54 s by default,
# plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

PORT=${BENCH_PORT:-19500}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
GOBALANCER="$TARGET_DIR/release/gobalancer"

echo "== building gobalancer and loadgen (release)"
cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen

OUT=$(mktemp -d /tmp/gobalancer-bench.XXXXXX)
: >"$OUT/results.tsv"

L7_PORT=$((PORT + 10))
require_free_ports "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)) "$L7_PORT"
start "$OUT/backends.log" "$LOADGEN" serve --listen "127.0.0.1:$((PORT + 1))" --count 3 --reply http
BACKENDS_PID=$LAST_PID
for i in 1 2 3; do wait_port $((PORT + i)) "$BACKENDS_PID"; done

start "$OUT/gobalancer.log" "$GOBALANCER" --listen "127.0.0.1:$PORT" --workers 1 --log-level warn \
  --backend "127.0.0.1:$((PORT + 1))" --backend "127.0.0.1:$((PORT + 2))" --backend "127.0.0.1:$((PORT + 3))"
PROXY_PID=$LAST_PID
wait_port "$PORT" "$PROXY_PID"
start "$OUT/gobalancer-http.log" "$GOBALANCER" --listen "127.0.0.1:$L7_PORT" --mode http --workers 1 --log-level warn \
  --backend "127.0.0.1:$((PORT + 1))" --backend "127.0.0.1:$((PORT + 2))" --backend "127.0.0.1:$((PORT + 3))"
L7_PID=$LAST_PID
wait_port "$L7_PORT" "$L7_PID"

echo "== $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections, $BENCH_THREADS loadgen threads, $BENCH_DURATION each"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  measure "$OUT" direct "$round" "http://127.0.0.1:$((PORT + 1))/" "$BACKENDS_PID"
  measure "$OUT" l4 "$round" "http://127.0.0.1:$PORT/" "$PROXY_PID"
  measure "$OUT" l7 "$round" "http://127.0.0.1:$L7_PORT/" "$L7_PID"
done

read -r d_rps d_p99 _ < <(medians "$OUT" direct)
read -r l_rps l_p99 l_eff < <(medians "$OUT" l4)
read -r h_rps h_p99 h_eff < <(medians "$OUT" l7)
echo
echo "== medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine))"
printf '%-28s %12s %10s %16s %12s %12s\n' run req/s p99_us "req/proxy-CPU-s" "req/s ratio" "p99 ratio"
printf '%-28s %12.0f %10.1f %16s %12s %12s\n' "direct (1 backend)" "$d_rps" "$d_p99" - 1.000 1.000
printf '%-28s %12.0f %10.1f %16.0f %12s %12s\n' "L4 gobalancer (1 worker)" "$l_rps" "$l_p99" "$l_eff" \
  "$(ratio "$l_rps" "$d_rps")" "$(ratio "$l_p99" "$d_p99")"
printf '%-28s %12.0f %10.1f %16.0f %12s %12s\n' "L7 gobalancer (1 worker)" "$h_rps" "$h_p99" "$h_eff" \
  "$(ratio "$h_rps" "$d_rps")" "$(ratio "$h_p99" "$d_p99")"
echo "raw results: $OUT"
