#!/usr/bin/env bash
# Memory per idle keep-alive client connection of gobalancer's L7 (HTTP) mode (issue 6;
# target: at most 16 KiB each).
#
# Starts a release gobalancer with one worker, one `mode: "http"` listener over three
# `loadgen serve` HTTP backends, `max_connections` above IDLE_CONNECTIONS and a
# keep-alive timeout (120s) far beyond the measuring time. One client process (python3,
# epoll, below) then:
#
#   1. opens IDLE_WARM connections, sends a few GETs on each and keeps them open (the
#      worker's buffers and the backend pool are warm; they are not counted);
#   2. reads the proxy's VmRSS (/proc/PID/status): the baseline;
#   3. opens IDLE_CONNECTIONS keep-alive connections (at most IDLE_WINDOW of them
#      connecting or waiting for their reply at a time), each sending ONE small GET and
#      reading its whole response, then leaving it idle;
#   4. once all are idle, waits IDLE_SETTLE_S seconds and reads VmRSS again (several
#      samples, the largest is taken), and checks every connection is still open;
#   5. prints (RSS after - RSS before) / IDLE_CONNECTIONS in bytes and its ratio to
#      16 KiB, then closes everything and reads VmRSS once more.
#
# Client source addresses are spread over 127.0.0.2-127.0.0.(1+IDLE_SOURCES) with
# IP_BIND_ADDRESS_NO_PORT, so the ephemeral port range is never the limit. RSS counts
# the proxy's user-space memory (heap, stacks, io_uring rings mapped into it); the
# kernel's socket buffers are not in it (they are the same for any proxy).
#
# Settings (environment): IDLE_CONNECTIONS (10000), IDLE_PORT (19880: gobalancer;
# backends +1..+3), IDLE_IO (auto: gobalancer's --io; epoll or uring), IDLE_WARM (16),
# IDLE_WINDOW (200), IDLE_SETTLE_S (2), IDLE_SOURCES (50). Bounded: the client gives up
# after IDLE_TIMEOUT_S (90) seconds, and everything started is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/scripts/common.sh

N=${IDLE_CONNECTIONS:-10000}
PORT=${IDLE_PORT:-19880}
IO=${IDLE_IO:-auto}
WARM=${IDLE_WARM:-16}
WINDOW=${IDLE_WINDOW:-200}
SETTLE_S=${IDLE_SETTLE_S:-2}
SOURCES=${IDLE_SOURCES:-50}
TIMEOUT_S=${IDLE_TIMEOUT_S:-90}
TARGET_BYTES=16384
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOADGEN="$TARGET_DIR/release/loadgen"
GOBALANCER="$TARGET_DIR/release/gobalancer"

# The proxy holds N client sockets (plus backend ones), the client N: raise the limit
# on open files as far as this session allows; both inherit it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((N + WARM + 1000)) ]; then
  echo "open-file limit $NOFILE is too low for $N connections (need $((N + WARM + 1000))); lower IDLE_CONNECTIONS" >&2
  exit 1
fi

echo "== building gobalancer and loadgen (release)"
cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen

OUT=$(mktemp -d /tmp/gobalancer-idle.XXXXXX)
B1=$((PORT + 1)) B2=$((PORT + 2)) B3=$((PORT + 3))
if ! (require_free_ports "$PORT" "$B1" "$B2" "$B3") 2>/dev/null; then
  echo "a port of 127.0.0.1:$PORT-$B3 is already in use; set IDLE_PORT to another base port" >&2
  exit 1
fi

cat >"$OUT/idle.ron" <<RON
(
    workers: 1,
    max_connections: $((N + WARM + 1000)),
    timeouts: (
        idle: "120s",
        keep_alive: "120s",
    ),
    listeners: [
        (name: "front", bind: "127.0.0.1:$PORT", mode: "http", pool: "web"),
    ],
    pools: [
        (
            name: "web",
            backends: [
                (address: "127.0.0.1:$B1"),
                (address: "127.0.0.1:$B2"),
                (address: "127.0.0.1:$B3"),
            ],
        ),
    ],
)
RON

start "$OUT/backends.log" "$LOADGEN" serve --listen "127.0.0.1:$B1" --count 3 --reply http
BACKENDS_PID=$LAST_PID
for p in $B1 $B2 $B3; do wait_port "$p" "$BACKENDS_PID"; done

start "$OUT/gobalancer.log" "$GOBALANCER" --config "$OUT/idle.ron" --io "$IO" --log-level info
GOBALANCER_PID=$LAST_PID
wait_port "$PORT" "$GOBALANCER_PID"
IO_USED=$(grep -m1 -o 'io="\?[a-z_]*' "$OUT/gobalancer.log" | sed 's/io="\?//' || true)

cat >"$OUT/idle_clients.py" <<'PY'
# Idle keep-alive clients: see bench/idle-memory.sh.
import errno, os, select, socket, sys, time

pid, port, n, warm, window, settle, sources, timeout = (int(a) for a in sys.argv[1:])
deadline = time.monotonic() + timeout
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-memory\r\n\r\n"
IP_BIND_ADDRESS_NO_PORT = 24


def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for pid {pid}: has the proxy exited?")


def response_done(buf):
    """True once buf holds a whole response head and its Content-Length body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 200"):
        raise SystemExit(f"unexpected response: {head[0]!r}")
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "connection" and "close" in value.lower():
            raise SystemExit("the proxy answered with Connection: close")
    return len(buf) >= end + 4 + length


def open_conns(count, requests_each, first_source):
    """Opens count connections, each sending requests_each GETs one after the other;
    returns the sockets, all idle (every response read)."""
    ep = select.epoll()
    conns = {}  # fd -> [sock, state, buf, left]
    done = []
    started = 0
    while len(done) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {len(done)} of {count} connections idle")
        while started < count and len(conns) < window:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((f"127.0.0.{2 + (first_source + started) % sources}", 0))
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                raise SystemExit(f"connect: {os.strerror(err)}")
            conns[s.fileno()] = [s, "connecting", b"", requests_each]
            ep.register(s.fileno(), select.EPOLLOUT)
            started += 1
        for fd, ev in ep.poll(1.0):
            c = conns[fd]
            s = c[0]
            if c[1] == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise SystemExit(f"connect: {os.strerror(err)}")
                s.send(REQ)  # small: the socket buffer takes it whole
                c[1] = "reading"
                ep.modify(fd, select.EPOLLIN)
                continue
            data = s.recv(65536)
            if not data:
                raise SystemExit("the proxy closed a connection before its response")
            c[2] += data
            if response_done(c[2]):
                c[3] -= 1
                c[2] = b""
                if c[3] > 0:
                    s.send(REQ)
                    continue
                ep.unregister(fd)
                del conns[fd]
                done.append(s)
    ep.close()
    return done


warm_conns = open_conns(warm, 10, 0)
time.sleep(0.5)
before = rss()
t0 = time.monotonic()
idle = open_conns(n, 1, warm)
opened_s = time.monotonic() - t0
time.sleep(settle)
samples = []
for _ in range(5):
    samples.append(rss())
    time.sleep(0.2)
after = max(samples)
# Every connection must still be open: a close would show as readable with EOF.
ep = select.epoll()
for s in idle:
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
closed = len(ep.poll(0.1))
ep.close()
for s in idle + warm_conns:
    s.close()
time.sleep(1.0)
released = rss()
per = (after - before) / n
print(f"connections        {n} idle (+{warm} warm-up, not counted), opened in {opened_s:.1f}s")
print(f"proxy VmRSS        before {before} B, idle {after} B (samples {min(samples)}..{max(samples)}), "
      f"after closing {released} B")
print(f"closed by proxy    {closed} of {n} before the measurement ended")
print(f"RSS delta / conn   {per:.0f} bytes")
print(f"ratio to 16 KiB    {per / 16384:.3f}  ({'within' if per <= 16384 else 'ABOVE'} the target)")
if closed:
    raise SystemExit("some idle connections were closed by the proxy: the figure is not valid")
PY

echo "== $N idle keep-alive connections to gobalancer (1 worker, --mode http, io ${IO_USED:-$IO}), $(date -u +%Y-%m-%d), $(machine)"
timeout $((TIMEOUT_S + 30)) python3 "$OUT/idle_clients.py" "$GOBALANCER_PID" "$PORT" "$N" "$WARM" "$WINDOW" \
  "$SETTLE_S" "$SOURCES" "$TIMEOUT_S"
if ! kill -0 "$GOBALANCER_PID" 2>/dev/null; then
  echo "gobalancer exited during the run; its log:" >&2
  tail -n 40 "$OUT/gobalancer.log" >&2
  exit 1
fi
echo "raw files: $OUT"
