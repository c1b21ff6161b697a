#!/usr/bin/env bash
# Issue 12.4's table: each stock client's write unavailability through a SIGKILL of the
# master's Redis and a planned switchover, with our agents at their defaults and then
# with real Redis Sentinel (down-after 1 s) in the same run. About two minutes.
#   bench/clients-vs-sentinel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-clients.sh >/dev/null
exec cargo test --release --test client_matrix -- --ignored --nocapture bench_clients_ours_vs_real_sentinel
