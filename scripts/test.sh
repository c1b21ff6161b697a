#!/usr/bin/env bash
# Every test: unit tests, real redis-server adapter tests, multi-process cluster tests, the
# stock-client matrix, and the benchmark's smoke test (one short run of each scenario
# against Redis Sentinel).
set -euo pipefail
cd "$(dirname "$0")/.."
# One clean build per run: incremental state only costs disk and time here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
scripts/install-deps.sh
# The stock clients of tests/client_matrix.rs, into a cache (seconds once cached).
scripts/install-clients.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets --no-fail-fast "$@"
