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

echo "== all checks passed"
