#!/usr/bin/env bash
# Installs the stock Redis clients of tests/client_matrix.rs (tests/clients/) into a cache
# outside the work tree, one directory per lock file content, so a second run only checks
# stamps. Prints, on stdout, one line per client library: `NAME=COMMAND-PREFIX` (the driver
# arguments follow it) or `NAME=skip: REASON`. A missing runtime fails when CI is set.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
drivers="$root/tests/clients"
cache="${RORC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-orchestrator}/clients"
failed=0

# Skip a library (outside CI) or fail (in CI).
missing() {
  local name="$1" reason="$2"
  if [ -n "${CI:-}" ]; then
    echo "install-clients: $name: $reason (CI is set: failing)" >&2
    failed=1
  else
    echo "install-clients: $name: $reason; skipping it" >&2
  fi
  echo "$name=skip: $reason"
}

key() { cat "$@" | sha256sum | cut -c1-16; }

# Python: redis-py in a venv.
install_python() {
  command -v python3 >/dev/null 2>&1 || { missing redis-py "python3 not found"; return; }
  local dir
  dir="$cache/python/$(key "$drivers/python/requirements.txt")"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! python3 -m venv "$dir/venv" >&2 ||
      ! "$dir/venv/bin/pip" install -q --disable-pip-version-check -r "$drivers/python/requirements.txt" >&2; then
      rm -rf "$dir"
      missing redis-py "could not install redis-py (python3 -m venv and pip)"
      return
    fi
    touch "$dir/.done"
  fi
  echo "redis-py-resp2=$dir/venv/bin/python $drivers/python/driver.py --protocol 2"
  echo "redis-py-resp3=$dir/venv/bin/python $drivers/python/driver.py --protocol 3"
}

# Node: `npm ci` of the lock file into the cache; the drivers find it through NODE_PATH.
install_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing ioredis "node or npm not found"
    missing node-redis "node or npm not found"
    return
  fi
  local dir
  dir="$cache/node/$(key "$drivers/node/package.json" "$drivers/node/package-lock.json")"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$drivers/node/package.json" "$drivers/node/package-lock.json" "$dir/"
    if ! (cd "$dir" && npm ci --silent --no-audit --no-fund >&2); then
      rm -rf "$dir"
      missing ioredis "npm ci failed"
      missing node-redis "npm ci failed"
      return
    fi
    touch "$dir/.done"
  fi
  echo "ioredis=env NODE_PATH=$dir/node_modules node $drivers/node/ioredis.js"
  echo "node-redis=env NODE_PATH=$dir/node_modules node $drivers/node/node-redis.js"
}

# Java: Maven resolves the pinned jars into a repository in the cache; Main.java runs
# from source (java 11+), so nothing is built in the work tree.
install_java() {
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    missing jedis "java or mvn not found"
    return
  fi
  local dir
  dir="$cache/java/$(key "$drivers/java/pom.xml")"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! mvn -q -B -Dstyle.color=never -f "$drivers/java/pom.xml" -Dmaven.repo.local="$cache/java/m2" \
      dependency:build-classpath -Dmdep.outputFile="$dir/classpath.txt" >&2; then
      rm -rf "$dir"
      missing jedis "mvn could not resolve Jedis"
      return
    fi
    touch "$dir/.done"
  fi
  echo "jedis=java -cp $(cat "$dir/classpath.txt") $drivers/java/Main.java"
}

install_python
install_node
install_java
exit "$failed"
