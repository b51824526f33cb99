#!/usr/bin/env bash
# The one gate: formatting, lints with warnings denied, and the whole test suite
# (unit, property, loopback integration and simulation tests). The README, CI and
# developers all run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

# The L7 suites once more on io_uring (the L4 suite runs every backend by itself). Where
# io_uring is unavailable each proxy start says SKIPPED and why, and runs on epoll.
echo "== L7 suites on io_uring"
GOBALANCER_TEST_IO=uring cargo test -p gobalancer --test http --test http_limits --test http_faults

# The tokio backend runs on kqueue on the BSDs and macOS: make sure the core and loadgen
# compile there (type-check only; no linker or kernel of those systems is needed).
echo "== cargo check for the kqueue targets"
for target in x86_64-unknown-freebsd x86_64-apple-darwin; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    cargo check --quiet -p gobalancer -p gobalancer-loadgen --target "$target"
    echo "checked $target"
  else
    echo "SKIPPED cargo check --target $target: not installed (rustup target add $target)"
  fi
done

echo "== all checks passed"
