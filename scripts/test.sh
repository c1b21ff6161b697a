#!/usr/bin/env bash
# Every test: unit tests, real redis-server adapter tests, multi-process cluster tests, the
# stock-client matrix, and the benchmark's smoke test (one short run of each scenario
# against Redis Sentinel); then the Valkey leg: the test binaries that drive real servers
# again, against valkey-server.
set -euo pipefail
cd "$(dirname "$0")/.."
# One clean build per run: incremental state only costs disk and time here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
scripts/install-deps.sh
# The stock clients of tests/client_matrix.rs, into a cache (seconds once cached).
scripts/install-clients.sh >/dev/null
# shellcheck source=scripts/valkey.sh
. scripts/valkey.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets --no-fail-fast "$@"
# install-deps.sh put it there; if it is gone now, fail rather than skip the leg.
if ! valkey_ok; then
  echo "valkey-server $VALKEY_VERSION missing or broken at $VALKEY_SERVER: run scripts/install-deps.sh" >&2
  exit 1
fi
echo "Valkey leg: RORC_REDIS_SERVER=$VALKEY_SERVER"
RORC_REDIS_SERVER="$VALKEY_SERVER" cargo test --no-fail-fast \
  --test redis_adapter --test cluster --test switchover --test demotion --test sentinel_endpoint \
  --test netns_scenarios "$@"
