#!/usr/bin/env bash
# Runs seeds 1..N of a scenario across every core and prints the failing seeds with
# the command that replays each one. Exit status 1 if any seed failed.
#
#   scripts/sim-sweep.sh SCENARIO N [FIRST_SEED]
#   scripts/sim-sweep.sh scenarios/chaos.ron 1000
#
# Seeds go out in chunks (xargs -P, one process per core), so a slow chunk does not
# leave a core idle. JOBS overrides the number of parallel processes; CHUNK the seeds
# per process.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 SCENARIO N [FIRST_SEED]" >&2
    exit 2
fi
scenario=$1
count=$2
first=${3:-1}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
chunk=${CHUNK:-25}

cargo build --quiet --release -p gobalancer-sim
bin=target/release/gobalancer-sim
"$bin" check "$scenario" >/dev/null

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
last=$((first + count))
for ((a = first; a < last; a += chunk)); do
    b=$((a + chunk < last ? a + chunk : last))
    echo "$a $b"
done | BIN=$bin SCENARIO=$scenario OUT=$out xargs -P "$jobs" -n 2 \
    sh -c '"$BIN" run "$SCENARIO" --seeds "$0..$1" --brief > "$OUT/$0.txt" 2>&1 || true'
end=$(date +%s)

cat "$out"/*.txt | grep -E '^seed [0-9]+ ' | sort -n -k2 > "$out/all"
passed=$(grep -c ' ok:' "$out/all" || true)
failed=$(grep -c ' FAIL:' "$out/all" || true)
echo "$scenario: $passed passed, $failed failed of $count seeds in $((end - start))s ($jobs processes)"
if [ "$failed" -gt 0 ]; then
    grep ' FAIL:' "$out/all"
    echo "failing seeds: $(grep ' FAIL:' "$out/all" | awk '{print $2}' | tr '\n' ' ')"
    grep ' FAIL:' "$out/all" | awk '{print $2}' | head -5 | while read -r s; do
        echo "  replay: cargo run -p gobalancer-sim --release -- run $scenario --seed $s --trace trace-$s.txt --svg timeline-$s.svg"
    done
    exit 1
fi
if [ "$passed" -ne "$count" ]; then
    echo "only $passed of $count seeds reported; see the runner's errors:" >&2
    cat "$out"/*.txt | grep -vE '^seed [0-9]+ ' | head -20 >&2
    exit 1
fi
