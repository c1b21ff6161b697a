#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian/Ubuntu machine:
# redis-server (real Redis for every test), redis-sentinel (benchmarks), iproute2/iptables,
# curl/openssl/unshare and the cached Kubernetes control plane (tests/kube_real.rs).
# In CI also the runtimes of the stock-client matrix (node, java, maven, python venv);
# elsewhere tests/client_matrix.rs skips a client whose runtime is missing (the libraries
# themselves come from scripts/install-clients.sh).
set -euo pipefail
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
# The real Kubernetes control plane of tests/kube_real.rs (kube-apiserver,
# kube-controller-manager, kubectl, etcd): built once from the Go module proxy into a cache
# outside the work tree (about 15 minutes cold, seconds once cached). It needs Go >= 1.24,
# which Debian 12's golang-go (1.19) is not: in CI a missing Go fails here; elsewhere the
# test is skipped with the reason.
build_control_plane() {
  local here
  here=$(cd "$(dirname "$0")" && pwd)
  if command -v go >/dev/null 2>&1; then
    "$here/k8s-control-plane.sh" build >/dev/null
  elif [ -n "${CI:-}" ]; then
    echo "CI: Go >= 1.24 is required to build the Kubernetes control plane for tests/kube_real.rs" >&2
    exit 1
  else
    echo "note: no Go; tests/kube_real.rs will be skipped unless the control plane is cached" >&2
  fi
}
if [ ${#missing[@]} -eq 0 ]; then
  build_control_plane
  exit 0
fi
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
build_control_plane
