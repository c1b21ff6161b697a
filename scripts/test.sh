#!/usr/bin/env bash
# Every test: unit tests, real redis-server adapter tests, multi-process cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --no-fail-fast "$@"
