#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (RELIABILITY.md §3.4) for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 60 seconds each, every target (request_head chunked response_head config).
# Needs the nightly toolchain (sanitizers); installs cargo-fuzz if it is missing.
# Each target starts from the committed seeds (fuzz/seeds/<target>, read only) plus the
# corpus grown by earlier runs (target/fuzz-corpus/<target>, ignored by git). A crash,
# a leak, an input over the time or memory limit, lands in fuzz/artifacts/<target>/ and
# makes the script exit 1; reproduce it with
#   cd fuzz && cargo +nightly fuzz run -a TARGET artifacts/TARGET/crash-...
# Extra libFuzzer flags: FUZZ_ARGS="-max_len=65536 -jobs=4" scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p target

ALL_TARGETS=(request_head chunked response_head config)
SECONDS_PER_TARGET=${1:-60}
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
fi
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=("${ALL_TARGETS[@]}")
fi
for t in "${TARGETS[@]}"; do
  if [[ ! " ${ALL_TARGETS[*]} " =~ " $t " ]]; then
    echo "unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# -a: debug assertions and overflow checks on, so an integer overflow in a length or
# size computation is a crash rather than a silent wrap.
echo "== building the fuzz targets"
if ! (cd fuzz && cargo +nightly fuzz build -a >"$ROOT/target/fuzz-build.log" 2>&1); then
  grep -E '^(error|warning)' -A 6 target/fuzz-build.log >&2 || tail -n 30 target/fuzz-build.log >&2
  echo "the fuzz targets do not build (full log: target/fuzz-build.log)" >&2
  exit 1
fi

LOGS=$ROOT/target/fuzz-logs
mkdir -p "$LOGS"
failed=()
summaries=()
for t in "${TARGETS[@]}"; do
  corpus=$ROOT/target/fuzz-corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log=$LOGS/$t.log
  echo "== fuzzing $t for ${SECONDS_PER_TARGET}s (log: ${log#"$ROOT"/})"
  # libFuzzer stops itself after -max_total_time; `timeout` is the backstop should it
  # not (a hang inside one input is caught sooner by -timeout).
  rc=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  (cd fuzz && timeout -k 10 $((SECONDS_PER_TARGET + 120)) \
    cargo +nightly fuzz run -a "$t" "$corpus" "$ROOT/fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 ${FUZZ_ARGS:-}) >"$log" 2>&1 || rc=$?
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  runs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || true) | tail -n 1 | awk '{print $2}')
  cov=$( (grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true) | tail -n 1 | grep -oE 'cov: [0-9]+' | awk '{print $2}' || true)
  corp=$(find "$corpus" -type f | wc -l)
  new=$((after - before))
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    line="$t: FAILED (exit $rc, $new new artifact(s) in fuzz/artifacts/$t) after ${runs:-?} runs"
    failed+=("$t")
    echo "---- last lines of $t's log:"
    grep -E 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written|^Output of .std::fmt::Debug.' -A3 "$log" | head -n 40 || true
    tail -n 15 "$log"
    echo "----"
  else
    line="$t: ok, ${runs:-?} runs in ${SECONDS_PER_TARGET}s, cov ${cov:-?}, corpus $corp"
  fi
  echo "$line"
  summaries+=("$line")
done

echo "== summary"
printf '%s\n' "${summaries[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/; logs in target/fuzz-logs/)" >&2
  exit 1
fi
