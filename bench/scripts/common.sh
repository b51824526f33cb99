# Helpers shared by scripts/bench.sh, scripts/compare-peers.sh and
# scripts/compare-loadgen.sh: start processes on loopback, wait for their ports, read
# their CPU time, run loadgen, and summarise. Sourced, not run.
#
# Every wait here is bounded, and every process started is killed (by its own PID) on
# exit, so a failed benchmark leaves nothing running.

# Seconds to wait for a port to accept connections.
PORT_WAIT_S=${PORT_WAIT_S:-10}

BENCH_PIDS=()

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap bench_cleanup EXIT

# start LOG CMD...: runs CMD in the background, remembers its PID in $LAST_PID.
start() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  LAST_PID=$!
  BENCH_PIDS+=("$LAST_PID")
}

# require_free_ports PORT...: fails when something already listens on one of them (a
# second benchmark running at the same time would measure the wrong processes).
require_free_ports() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is already in use; set BENCH_PORT to another base port" >&2
      exit 1
    fi
  done
}

# wait_port PORT [PID]: until 127.0.0.1:PORT accepts a connection (at most PORT_WAIT_S);
# with PID, fails as soon as that process has exited (it could not bind, say).
wait_port() {
  local port=$1 pid=${2:-} i
  for ((i = 0; i < PORT_WAIT_S * 10; i++)); do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "the process that should listen on 127.0.0.1:$port has exited" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after ${PORT_WAIT_S}s" >&2
  return 1
}

# cpu_ticks PID: user + system CPU time of PID and its direct children (nginx's
# workers), in clock ticks (getconf CLK_TCK per second). Fields 14 and 15 of
# /proc/PID/stat; the command name (field 2) may hold spaces, so cut after its ')'.
cpu_ticks() {
  local pid=$1 total=0 p
  for p in "$pid" $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}

CLK_TCK=$(getconf CLK_TCK)

# json_field FILE EXPR: a number out of a loadgen JSON result (jq syntax).
json_field() {
  jq -r "$2" "$1"
}

# median of the numbers given as arguments.
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with three decimals ("-" if B is 0 or not a number).
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.3f\n", a / b }'
}

# machine: one line naming the machine, for result files.
machine() {
  echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
}

# Load settings, overridable from the environment.
BENCH_DURATION=${BENCH_DURATION:-5s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32}
BENCH_THREADS=${BENCH_THREADS:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}

# measure OUT LABEL ROUND URL PID: a warm-up run, then a measured run of loadgen
# against URL while the CPU time of PID (the proxy; the backends in a direct run) is
# read before and after. Appends one line to
# OUT/results.tsv: label round req/s p99_ns requests errors cpu_seconds.
measure() {
  local out=$1 label=$2 round=$3 url=$4 pid=$5 json before after
  json="$out/$label-$round.json"
  "$LOADGEN" -q -c "$BENCH_CONNECTIONS" -t "$BENCH_THREADS" -d "$BENCH_WARMUP" "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  "$LOADGEN" -q -c "$BENCH_CONNECTIONS" -t "$BENCH_THREADS" -d "$BENCH_DURATION" --json "$json" "$url" >/dev/null
  after=$(cpu_ticks "$pid")
  local rps p99 requests errors
  rps=$(json_field "$json" .requests_per_s)
  p99=$(json_field "$json" .latency_ns.p99)
  requests=$(json_field "$json" .requests)
  errors=$(json_field "$json" '[.errors[]] | add')
  if [ "$requests" = 0 ]; then
    echo "$label: no replies at all; is $url serving? (errors: $(jq -c .errors "$json"))" >&2
    return 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$round" "$rps" "$p99" "$requests" "$errors" \
    "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')" >>"$out/results.tsv"
  printf "  round %s %-12s %10.0f req/s  p99 %8.1f us  %s errors  server CPU %ss\n" "$round" "$label" "$rps" \
    "$(awk -v n="$p99" 'BEGIN { print n / 1000 }')" "$errors" \
    "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
}

# medians OUT LABEL: "req/s p99_us req_per_cpu_s" medians of LABEL's rounds.
medians() {
  local out=$1 label=$2
  local rps=() p99=() eff=()
  while IFS=$'\t' read -r l _round r p n _e cpu; do
    [ "$l" = "$label" ] || continue
    rps+=("$r")
    p99+=("$(awk -v n="$p" 'BEGIN { print n / 1000 }')")
    eff+=("$(awk -v n="$n" -v c="$cpu" 'BEGIN { if (c > 0) print n / c; else print 0 }')")
  done <"$out/results.tsv"
  echo "$(median "${rps[@]}") $(median "${p99[@]}") $(median "${eff[@]}")"
}
