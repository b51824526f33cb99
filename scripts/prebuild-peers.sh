#!/usr/bin/env bash
# Gathers what scripts/compare-peers.sh (BENCH_PREBUILT=DIR, BENCH_MODE=http) and the
# bulk benchmark need on a machine without a toolchain or a package mirror (a lent
# benchmark machine): stripped release builds of gobalancer, loadgen and the bulk test
# binary, and this machine's haproxy and nginx with the shared libraries they load
# (DIR/lib, put on LD_LIBRARY_PATH by compare-peers.sh). About 25 MiB.
#
#   scripts/prebuild-peers.sh [DIR]      (default target/peers)
#
# Then, on the other machine, from the repository root with DIR carried along:
#   BENCH_PREBUILT=target/peers BENCH_MODE=http BENCH_ROUNDS=9 BENCH_DURATION=3s scripts/compare-peers.sh
#   BULK_ROUNDS=9 target/peers/bulk --ignored --nocapture            (L4; BULK_MODE=http for L7)
# (nginx wants /var/lib/nginx/body and /var/log/nginx to exist: mkdir -p them first.)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/peers}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in haproxy nginx; do
  command -v "$tool" >/dev/null || {
    echo "$tool is not installed here (apt-get install haproxy nginx)" >&2
    exit 1
  }
done

echo "== building gobalancer, loadgen and the bulk benchmark (release)"
cargo build --release --quiet -p gobalancer --bin gobalancer -p gobalancer-loadgen --bin loadgen
bulk=$(cargo test --release --no-run -p gobalancer --test bulk --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*bulk-[^"]*\)".*/\1/p' | tail -1)
[ -n "$bulk" ] || {
  echo "could not find the bulk test binary" >&2
  exit 1
}

rm -rf "$DIR"
mkdir -p "$DIR/lib"
cp "$TARGET_DIR/release/gobalancer" "$TARGET_DIR/release/loadgen" "$DIR/"
cp "$bulk" "$DIR/bulk"
cp "$(command -v haproxy)" "$(command -v nginx)" "$DIR/"
strip "$DIR/gobalancer" "$DIR/loadgen" "$DIR/bulk"
# The libraries haproxy and nginx load, except the C library's own (the other machine
# has those, and mixing versions of the loader breaks).
for bin in "$DIR/haproxy" "$DIR/nginx"; do
  ldd "$bin" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.* | libm.so.* | ld-linux* | libpthread.so.* | libdl.so.* | librt.so.*) ;;
      *) cp -L "$lib" "$DIR/lib/" ;;
    esac
  done
done
du -sh "$DIR"
