#!/usr/bin/env bash
# Every test: unit tests, real redis-server adapter tests, multi-process cluster tests, and
# the benchmark's smoke test (one short run of each scenario against Redis Sentinel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets --no-fail-fast "$@"
