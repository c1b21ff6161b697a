#!/usr/bin/env bash
# Regenerate symbol-order.txt, the link order of the release agent's functions (build.rs
# passes it to the linker): the functions a real cluster runs, hottest first, so they share
# few pages of the binary and an idle agent keeps less of it resident.
#
# It builds the release agent with its symbols (RORC_KEEP_SYMBOLS=1: the same symbol names
# as the stripped build), runs two Redis, two data agents and a witness on 127.0.0.1 with
# every agent under callgrind: start, IDLE_SECONDS idle (with /health and /metrics polled
# like a Kubernetes probe and a scraper would), a planned switchover, then one data agent
# stopped while the others go on; then the same natively under perf (when it works here), for
# the code that only runs on this CPU's features. Then it rebuilds the stripped agent with
# the new order.
#
# Run it after a change of rustc, Cargo.lock or features (names then change), or when the
# agent's code changed much; a name the file lacks only loses its place. Needs valgrind and
# redis-server; perf helps.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECONDS="${IDLE_SECONDS:-90}"
for tool in valgrind redis-server curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "symbol-order: $tool is needed" >&2; exit 1; }
done

RORC_KEEP_SYMBOLS=1 cargo build --release --quiet -p redis-orchestrator --bin redis-orchestrator
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
agent="$work/redis-orchestrator"
cp "$target_dir/release/redis-orchestrator" "$agent"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
names=(data-1 data-2 witness)

# One run of the whole scenario, in directory $1, with every agent started under the
# command in the other arguments (its output file named by the agent's name in place of @).
run_cluster() {
  local run="$1"
  shift
  local -A raft api redis agent_pid
  local name dir peers secret wrapper redis_args
  for name in "${names[@]}"; do
    raft[$name]=$(free_port); api[$name]=$(free_port); redis[$name]=$(free_port)
  done
  peers="127.0.0.1:${raft[data-1]},127.0.0.1:${raft[data-2]},127.0.0.1:${raft[witness]}"
  secret="symbol-order-$RANDOM$RANDOM"
  for name in "${names[@]}"; do
    dir="$run/$name"
    mkdir -p "$dir"
    redis_args=(--standalone)
    if [ "$name" != witness ]; then
      redis-server --port "${redis[$name]}" --bind 127.0.0.1 --save "" --appendonly no \
        --repl-diskless-sync-delay 0 --min-replicas-to-write 1 --dir "$dir" \
        >"$dir/redis.log" 2>&1 &
      pids+=($!)
      redis_args=(--redis-host=127.0.0.1 "--redis-port=${redis[$name]}")
    fi
    wrapper=("${@//@/$name}")
    SHARED_SECRET="$secret" "${wrapper[@]}" "$agent" \
      "--raft-peers=$peers" "--raft-advertise=127.0.0.1:${raft[$name]}" \
      "--raft-bind=127.0.0.1:${raft[$name]}" "--api-bind=127.0.0.1:${api[$name]}" \
      "--raft-data-dir=$dir/raft" "--site=$name" "--node-name=$name" --election-mode=raft \
      "${redis_args[@]}" >"$dir/agent.log" 2>&1 &
    agent_pid[$name]=$!
    pids+=($!)
  done
  echo "symbol-order: cluster under $1 in $run; ${IDLE_SECONDS}s idle" >&2
  local deadline=$((SECONDS + IDLE_SECONDS))
  while [ $SECONDS -lt $deadline ]; do
    for name in "${names[@]}"; do
      curl -s -m 5 -o /dev/null "http://127.0.0.1:${api[$name]}/health" || true
      curl -s -m 5 -o /dev/null "http://127.0.0.1:${api[$name]}/metrics" || true
    done
    sleep 10
  done
  echo "symbol-order: switchover, then data-1's agent stopped" >&2
  SHARED_SECRET="$secret" "$agent" switchover --agent "127.0.0.1:${api[data-2]}" --timeout 60s >&2 || true
  sleep 20
  kill -TERM "${agent_pid[data-1]}"
  wait "${agent_pid[data-1]}" 2>/dev/null || true
  sleep 30
  for name in "${names[@]}"; do
    kill -TERM "${agent_pid[$name]}" 2>/dev/null || true
  done
  for name in "${names[@]}"; do
    wait "${agent_pid[$name]}" 2>/dev/null || true
  done
}

# Callgrind sees every function that runs, but on its own CPU model: code chosen by CPU
# features (SHA extensions for the request signatures, say) runs only natively, so a
# second run samples the agents with perf where it works.
run_cluster "$work/callgrind" valgrind --tool=callgrind --demangle=no --compress-strings=no \
  --compress-pos=no "--callgrind-out-file=$work/callgrind.@.out"
native=()
if perf record -q -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
  run_cluster "$work/perf" perf record -q -e cpu-clock -F 10000 -o "$work/perf.@.data"
  for name in "${names[@]}"; do
    perf report --no-demangle -i "$work/perf.$name.data" --sort dso,sym --stdio 2>/dev/null \
      | awk -v bin="$(basename "$agent")" '$0 !~ /^#/ && $2 == bin {print $NF}' >>"$work/native.txt"
  done
  native=("$work/native.txt")
else
  echo "symbol-order: no perf here: only what callgrind saw" >&2
fi

# Every function of the agent's own object that ran under callgrind, by its own instruction
# count summed over the agents, hottest first; then those only the native run sampled.
python3 - "$agent" "${native[0]:-}" "$work"/callgrind.*.out >symbol-order.txt <<'PY'
import collections, sys
agent, native, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
cost = collections.Counter()
for out in outs:
    ours = False
    fn = None
    after_call = False
    with open(out, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                ours = line[3:].strip() == agent
            elif line.startswith("fn="):
                fn = line[3:].strip() if ours else None
                if fn:
                    cost[fn] += 0
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if fn and not after_call:
                    parts = line.split()
                    if len(parts) > 1 and parts[1].isdigit():
                        cost[fn] += int(parts[1])
                after_call = False
if not cost:
    sys.exit("symbol-order: no function of the agent in the callgrind output")
ordered = [name for name, _ in sorted(cost.items(), key=lambda item: (-item[1], item[0]))]
if native:
    seen = set(ordered)
    for line in open(native):
        name = line.strip()
        if name and name not in seen:
            seen.add(name)
            ordered.append(name)
print("\n".join(ordered))
PY
echo "symbol-order: $(wc -l <symbol-order.txt) functions in symbol-order.txt" >&2
cargo build --release --quiet -p redis-orchestrator --bin redis-orchestrator
