#!/usr/bin/env bash
# Randomized nemesis: random partitions, crashes, pauses and WAN latency/loss against three
# sites in network namespaces, then the invariant checker and a summary table.
# Needs root, iproute2 and iptables. The same seed replays the same faults.
#
#   scripts/nemesis.sh [--seed N] [--faults N]     (default: random seed, 100 faults)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=""
faults=100
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    *) echo "usage: $0 [--seed N] [--faults N]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "the nemesis creates network namespaces and iptables rules: run it as root" >&2
  exit 1
fi
scripts/install-deps.sh
NEMESIS_SEED="$seed" NEMESIS_FAULTS="$faults" \
  exec cargo test --test netns_nemesis -- --ignored --nocapture nemesis
