#!/usr/bin/env bash
# Two gobalancer binaries against each other (a change measured before and after), on
# loopback: for each I/O backend in BENCH_IOS, one one-worker proxy per binary over the
# same three `loadgen serve` backends; rounds alternate old and new, so that noise on a
# shared machine hits both alike. Prints medians of req/s, p99 and req per proxy
# CPU-second, and the new/old ratios.
#
#   BENCH_OLD=/path/to/old/gobalancer scripts/bench-ab.sh
#
# Settings (environment): BENCH_OLD (required), BENCH_NEW (this tree's release build,
# built first), BENCH_IOS ("epoll uring"), BENCH_MODE (http; or tcp), and as for
# scripts/bench.sh BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_THREADS,
# BENCH_ROUNDS, BENCH_PORT (19800: backends on +1..+3, proxies from +10).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

OLD=${BENCH_OLD:?set BENCH_OLD to the gobalancer binary to compare against}
PORT=${BENCH_PORT:-19800}
MODE=${BENCH_MODE:-http}
IOS=(${BENCH_IOS:-epoll uring})
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
if [ -z "${BENCH_NEW:-}" ]; then
  echo "== building gobalancer and loadgen (release)"
  cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen
fi
NEW=${BENCH_NEW:-$TARGET_DIR/release/gobalancer}
[ -x "$LOADGEN" ] || cargo build --release --quiet -p gobalancer-loadgen --bin loadgen

OUT=$(mktemp -d /tmp/gobalancer-bench-ab.XXXXXX)
: >"$OUT/results.tsv"
start "$OUT/backends.log" "$LOADGEN" serve --listen "127.0.0.1:$((PORT + 1))" --count 3 --reply http
for i in 1 2 3; do wait_port $((PORT + i)); done
backends=(--backend "127.0.0.1:$((PORT + 1))" --backend "127.0.0.1:$((PORT + 2))" --backend "127.0.0.1:$((PORT + 3))")

declare -A PID ADDR
n=10
for v in old new; do
  for io in "${IOS[@]}"; do
    bin=$OLD
    [ "$v" = new ] && bin=$NEW
    require_free_ports $((PORT + n))
    start "$OUT/$v-$io.log" "$bin" --io "$io" --mode "$MODE" --listen "127.0.0.1:$((PORT + n))" --workers 1 \
      --log-level warn "${backends[@]}"
    PID[$v-$io]=$LAST_PID
    ADDR[$v-$io]="http://127.0.0.1:$((PORT + n))/"
    wait_port $((PORT + n))
    n=$((n + 1))
  done
done

echo "== $MODE, $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections, $BENCH_THREADS loadgen threads, $BENCH_DURATION each"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for io in "${IOS[@]}"; do
    for v in old new; do
      measure "$OUT" "$v-$io" "$round" "${ADDR[$v-$io]}" "${PID[$v-$io]}"
    done
  done
done

echo
echo "== medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine))"
printf '%-8s %-4s %12s %10s %16s\n' io run req/s p99_us "req/proxy-CPU-s"
for io in "${IOS[@]}"; do
  read -r o_rps o_p99 o_eff < <(medians "$OUT" "old-$io")
  read -r n_rps n_p99 n_eff < <(medians "$OUT" "new-$io")
  printf '%-8s %-4s %12.0f %10.1f %16.0f\n' "$io" old "$o_rps" "$o_p99" "$o_eff"
  printf '%-8s %-4s %12.0f %10.1f %16.0f\n' "$io" new "$n_rps" "$n_p99" "$n_eff"
  printf '%-8s %-4s %12s %10s %16s\n' "$io" n/o "$(ratio "$n_rps" "$o_rps")" "$(ratio "$n_p99" "$o_p99")" "$(ratio "$n_eff" "$o_eff")"
done
echo "raw results: $OUT"
