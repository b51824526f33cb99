#!/usr/bin/env bash
# Performance gate: instruction counts of the hot functions (bench/src/lib.rs) against
# the baselines committed in bench/baselines/icount.tsv. Fails when any count grows by
# more than 5%. Instruction counts repeat exactly from run to run, unlike wall time on a
# shared machine, so a 5% threshold is a real signal (DESIGN.md section 6).
#
#   scripts/perf-gate.sh            compare; print old/new/ratio; exit 1 on a regression
#   scripts/perf-gate.sh --update   rewrite the baselines (commit them with the reason)
#
# How a count is taken: `icount run NAME N` and `icount run NAME 2N` each run under
# `valgrind --tool=cachegrind --cache-sim=no`; the difference of their totals divided by
# N is the instructions of one iteration, with set-up, process start and exit cancelled.
#
# The counts depend on the compiler and the dependency versions (Cargo.lock): a rustc
# upgrade is a reason to --update. They do not depend on the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=bench/baselines/icount.tsv
MAX_GROWTH_PCT=${PERF_GATE_MAX_GROWTH_PCT:-5}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/icount/icount"

update=0
case "${1:-}" in
  --update) update=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

if ! command -v valgrind >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing valgrind"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  else
    echo "perf-gate: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
  fi
fi

echo "== building the instruction-count harness (release)"
# Profile `icount` (release with one codegen unit): with several, code added anywhere in
# the crate reshuffles how functions are split between units and so what gets inlined,
# which moved counts of untouched code by up to 5%.
cargo build --profile icount --quiet -p gobalancer-bench --bin icount

# Total instructions of `icount run NAME ITERS`.
count() {
  local out
  out=$(valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$BIN" run "$1" "$2" 2>&1 >/dev/null) || { echo "perf-gate: $1 failed under valgrind:" >&2; echo "$out" >&2; return 1; }
  echo "$out" | awk '/I[[:space:]]+refs:/ { gsub(",", "", $NF); print $NF }'
}

declare -A old
if [ -f "$BASELINE" ]; then
  while IFS=$'\t' read -r name value; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    old[$name]=$value
  done <"$BASELINE"
fi

results=()
echo "== counting instructions (valgrind $(valgrind --version | sed 's/valgrind-//'))"
while IFS=$'\t' read -r name iters; do
  c1=$(count "$name" "$iters")
  c2=$(count "$name" $((iters * 2)))
  per=$(awk -v a="$c1" -v b="$c2" -v n="$iters" 'BEGIN { printf "%.2f", (b - a) / n }')
  results+=("$name"$'\t'"$per")
done < <("$BIN" list)

if [ "$update" = 1 ]; then
  {
    echo "# Instructions per iteration of each workload in bench/src/lib.rs, counted by"
    echo "# scripts/perf-gate.sh (valgrind --tool=cachegrind). The gate fails when one grows"
    echo "# by more than ${MAX_GROWTH_PCT}%. Regenerate with scripts/perf-gate.sh --update and"
    echo "# commit with the reason. Taken $(date -u +%Y-%m-%d) with $(rustc --version | cut -d' ' -f1-2),"
    echo "# $(valgrind --version), on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
    printf '%s\n' "${results[@]}"
  } >"$BASELINE"
  echo "== wrote $BASELINE"
fi

status=0
passed=0
failed=0
printf '\n%-36s %14s %14s %8s  %s\n' workload old new ratio verdict
for line in "${results[@]}"; do
  name=${line%%$'\t'*}
  new=${line#*$'\t'}
  base=${old[$name]:-}
  if [ -z "$base" ]; then
    verdict="no baseline"
    if [ "$update" = 1 ]; then passed=$((passed + 1)); else status=1 failed=$((failed + 1)); fi
    printf '%-36s %14s %14s %8s  %s\n' "$name" "-" "$new" "-" "$verdict"
    continue
  fi
  read -r ratio verdict < <(awk -v o="$base" -v n="$new" -v max="$MAX_GROWTH_PCT" 'BEGIN {
    r = (o > 0) ? n / o : (n > 0 ? 999 : 1)
    v = "ok"
    if (r > 1 + max / 100) v = "REGRESSION"
    else if (r < 1 - max / 100) v = "faster"
    printf "%.3f %s\n", r, v }')
  if [ "$verdict" = REGRESSION ] && [ "$update" = 0 ]; then
    status=1 failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
  printf '%-36s %14s %14s %8s  %s\n' "$name" "$base" "$new" "$ratio" "$verdict"
  unset "old[$name]"
done
for name in "${!old[@]}"; do
  echo "note: baseline $name has no workload any more (run --update)"
done

if [ "$status" != 0 ]; then
  echo
  echo "perf-gate: FAILED: an instruction count grew by more than ${MAX_GROWTH_PCT}%, or a workload has no baseline."
  echo "If the cost is intended, run scripts/perf-gate.sh --update and commit the baselines with the reason."
  echo "perf-gate: $passed passed, $failed failed"
  exit 1
fi
echo
echo "perf-gate: $passed passed, $failed failed"
