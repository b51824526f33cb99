#!/usr/bin/env bash
# loadgen against wrk, on the same `loadgen serve` backend, with the same connections,
# threads and duration, alternating (loadgen, wrk, loadgen, wrk, ...) for BENCH_ROUNDS
# rounds. The target of issue 5: loadgen is never the bottleneck, so its req/s should be
# at least wrk's (ratio >= 1.0).
#
# Installs wrk from the distribution's packages when missing (needs root and apt-get).
# Settings: BENCH_DURATION (5s), BENCH_CONNECTIONS (32), BENCH_THREADS (1),
# BENCH_ROUNDS (3), BENCH_PORT (19700: the backend).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

PORT=${BENCH_PORT:-19700}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"

if ! command -v wrk >/dev/null; then
  echo "== installing wrk"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

echo "== building loadgen (release)"
cargo build --release --quiet -p gobalancer-loadgen --bin loadgen

OUT=$(mktemp -d /tmp/gobalancer-loadgen-vs-wrk.XXXXXX)
require_free_ports "$PORT"
start "$OUT/backend.log" "$LOADGEN" serve --listen "127.0.0.1:$PORT" --count 1 --reply http
wait_port "$PORT" "$LAST_PID"
URL="http://127.0.0.1:$PORT/"

# wrk prints latency percentiles with a unit ("1.23ms"); this turns one into us.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") print n; else if (u == "ms") print n * 1000; else if (u == "s") print n * 1000000; else print n }'
}

lg_rps=() lg_p99=() wrk_rps=() wrk_p99=()
echo "== $BENCH_ROUNDS rounds: $BENCH_CONNECTIONS connections, $BENCH_THREADS threads, $BENCH_DURATION each"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  "$LOADGEN" -q -c "$BENCH_CONNECTIONS" -t "$BENCH_THREADS" -d "$BENCH_DURATION" --json "$OUT/loadgen-$round.json" "$URL" >/dev/null
  r=$(json_field "$OUT/loadgen-$round.json" .requests_per_s)
  p=$(awk -v n="$(json_field "$OUT/loadgen-$round.json" .latency_ns.p99)" 'BEGIN { print n / 1000 }')
  lg_rps+=("$r") lg_p99+=("$p")
  printf '  round %s loadgen %10.0f req/s  p99 %8.1f us\n' "$round" "$r" "$p"

  wrk -c "$BENCH_CONNECTIONS" -t "$BENCH_THREADS" -d "$BENCH_DURATION" --latency "$URL" >"$OUT/wrk-$round.txt"
  r=$(awk '/^Requests\/sec:/ { print $2 }' "$OUT/wrk-$round.txt")
  p=$(to_us "$(awk '$1 == "99%" { print $2 }' "$OUT/wrk-$round.txt")")
  wrk_rps+=("$r") wrk_p99+=("$p")
  printf '  round %s wrk     %10.0f req/s  p99 %8.1f us\n' "$round" "$r" "$p"
done

m_lg=$(median "${lg_rps[@]}") m_wrk=$(median "${wrk_rps[@]}")
p_lg=$(median "${lg_p99[@]}") p_wrk=$(median "${wrk_p99[@]}")
echo
echo "== medians of $BENCH_ROUNDS rounds ($(date -u +%Y-%m-%d), $(machine), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2))"
printf '%-16s %12s %10s\n' client req/s p99_us
printf '%-16s %12.0f %10.1f\n' loadgen "$m_lg" "$p_lg"
printf '%-16s %12.0f %10.1f\n' wrk "$m_wrk" "$p_wrk"
printf '%-16s %12s %10s\n' "loadgen / wrk" "$(ratio "$m_lg" "$m_wrk")" "$(ratio "$p_lg" "$p_wrk")"
echo "raw results: $OUT"
