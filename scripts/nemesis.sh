#!/usr/bin/env bash
# Randomized nemesis: random partitions, crashes, pauses, WAN latency/loss and operator
# mistakes against three sites in network namespaces, then the invariant checker and a
# summary table — for our agents, for Redis Sentinel on the same hosts under the same
# seeded plan, or both side by side. Needs root, iproute2 and iptables. The same seed
# replays the same faults.
#
#   scripts/nemesis.sh [--seed N] [--faults N] [--system ours|sentinel|both] [--no-wipe]
#   (default: random seed, 100 faults, both systems, wiped-Raft-dir faults on)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=""
faults=100
system=both
wipe=1
usage="usage: $0 [--seed N] [--faults N] [--system ours|sentinel|both] [--no-wipe]"
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --faults) faults="$2"; shift 2 ;;
    --system)
      case "$2" in
        ours|sentinel|both) system="$2" ;;
        *) echo "$usage" >&2; exit 2 ;;
      esac
      shift 2 ;;
    --no-wipe) wipe=0; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "the nemesis creates network namespaces and iptables rules: run it as root" >&2
  exit 1
fi
scripts/install-deps.sh
NEMESIS_SEED="$seed" NEMESIS_FAULTS="$faults" NEMESIS_SYSTEM="$system" NEMESIS_WIPE="$wipe" \
  exec cargo test --test netns_nemesis -- --ignored --nocapture nemesis
