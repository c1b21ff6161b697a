#!/usr/bin/env bash
# The main job: a local three-site cluster on 127.0.0.1 that you can watch fail over.
# Extra arguments go to `redis-orchestrator demo` (e.g. --kill-master-after 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --quiet -- demo "$@"
