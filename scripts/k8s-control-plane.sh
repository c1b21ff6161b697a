#!/usr/bin/env bash
# A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) as plain
# processes on 127.0.0.1, for tests that need the real API server. There is no kubelet: a
# test plays the kubelet's part by patching pod status itself.
#
#   scripts/k8s-control-plane.sh up DIR     start one; writes DIR/kubeconfig, DIR/bin/kubectl,
#                                          DIR/pids, DIR/logs/ (audit.log: every API
#                                          request); prints the API server URL
#   scripts/k8s-control-plane.sh down DIR   stop the one started in DIR
#   scripts/k8s-control-plane.sh build      only build (or find) the cached binaries
#
# The binaries are built once from the Go module proxy (no download site is reachable from the
# build machines) and cached by version under
# ${RORC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-orchestrator}/k8s/. A cold build takes
# about 15 minutes on two shared cores and needs Go >= 1.24; later runs find the cache and
# start in a few seconds. DIR/server holds the URL too; DIR/pki the CA (ca.crt) and keys.
#
# Environment:
#   RORC_K8S_BASE_PORT   use ports BASE..BASE+3 instead of random free ones
#   RORC_BUILD_PROCS     GOMAXPROCS for the one-time build (default 2)
set -euo pipefail

# The newest 1.33 patch (the agent is built against k8s-openapi's v1_33), and the newest etcd
# of the 3.5 line that Kubernetes 1.33 is tested with.
K8S_VERSION=v1.33.13
ETCD_VERSION=v3.5.35

CACHE_ROOT="${RORC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-orchestrator}/k8s"
K8S_DIR="$CACHE_ROOT/$K8S_VERSION"
ETCD_DIR="$CACHE_ROOT/etcd-$ETCD_VERSION"
K8S_BINS=(kube-apiserver kube-controller-manager kubectl)

# Controllers the tests rely on: endpoints and slices for Services, service-account tokens,
# namespace deletion (with the PVC/PV protection finalizers it waits for), garbage collection,
# the workload controllers that turn the manifests into Pods, and the kube-root-ca.crt
# ConfigMap that every Pod's service-account volume refers to.
CONTROLLERS=endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,statefulset-controller,deployment-controller,replicaset-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,root-ca-certificate-publisher-controller

log() { echo "k8s-control-plane: $*" >&2; }
die() {
  log "$*"
  exit 1
}

usage() {
  echo "usage: $0 up DIR | down DIR | build" >&2
  exit 2
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not installed"
  done
}

# Writes go.mod for a scratch module that builds MODULE@VERSION's commands. The dependency's
# own go.mod decides the language version and GODEBUG defaults, as in its upstream build.
# Further arguments are extra lines (replace directives).
scratch_module() {
  local dir=$1 module=$2 version=$3 gomod=$4
  shift 4
  {
    echo "module rorc-build/$(basename "$module")"
    grep -E '^(go|godebug) ' "$gomod"
    echo "require $module $version"
    if [ $# -gt 0 ]; then
      echo "replace ("
      printf '\t%s\n' "$@"
      echo ")"
    fi
  } >"$dir/go.mod"
}

# Runs one build step with its output in the cache's build log; on failure shows its tail.
build_step() {
  local logfile=$1
  shift
  if ! "$@" >>"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2
    die "build failed: $* (full log: $logfile)"
  fi
}

# GOMODCACHE and GOCACHE live in the cache directory of this version, so the build touches
# nothing else, and both are removed once the binaries exist.
go_env() {
  local dir=$1
  export GOMODCACHE="$dir/gomod" GOCACHE="$dir/gocache" GOFLAGS=-modcacherw
  export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0
  export GOMAXPROCS="${RORC_BUILD_PROCS:-2}"
}

clean_go_caches() {
  local dir=$1
  go clean -cache >/dev/null 2>&1 || true
  go clean -modcache >/dev/null 2>&1 || true
  rm -rf "$dir/gocache" "$dir/gomod" "$dir/src"
}

k8s_built() {
  local b
  for b in "${K8S_BINS[@]}"; do [ -x "$K8S_DIR/bin/$b" ] || return 1; done
}

# k8s.io/kubernetes cannot be built with `go install`: its go.mod replaces every staging
# module (k8s.io/api, k8s.io/client-go, ...) with a directory inside the repository. A scratch
# module that requires it and points each staging module at its published v0.Y.Z release
# builds the same code.
build_k8s() {
  k8s_built && return 0
  (
    go_env "$K8S_DIR"
    local src="$K8S_DIR/src" logfile="$K8S_DIR/build.log" gomod staging
    rm -rf "$src" "$K8S_DIR/bin.tmp"
    mkdir -p "$src" "$K8S_DIR/bin.tmp"
    : >"$logfile"
    cd "$src"
    log "building Kubernetes $K8S_VERSION from the Go module proxy (once; several minutes)"
    echo "module rorc-build/probe" >go.mod
    build_step "$logfile" go mod download k8s.io/kubernetes@"$K8S_VERSION"
    gomod="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
    [ -f "$gomod" ] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION after download"
    staging="v0.${K8S_VERSION#v1.}"
    local replaces=()
    mapfile -t replaces < <(sed -nE "s#^[[:space:]]*(k8s\.io/[^ ]+) => \./staging/src/.*#\1 => \1 $staging#p" "$gomod")
    [ ${#replaces[@]} -gt 0 ] || die "found no staging modules in $gomod"
    scratch_module "$src" k8s.io/kubernetes "$K8S_VERSION" "$gomod" "${replaces[@]}"
    local pkg="k8s.io/component-base/version" cli="k8s.io/client-go/pkg/version" minor
    minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    local x="" p
    for p in "$pkg" "$cli"; do
      x+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    build_step "$logfile" nice -n 10 go build -mod=mod -trimpath -ldflags "-s -w$x" \
      -o "$K8S_DIR/bin.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl
    rm -rf "${K8S_DIR:?}/bin"
    mv "$K8S_DIR/bin.tmp" "$K8S_DIR/bin"
    clean_go_caches "$K8S_DIR"
  )
}

# etcd's server module also replaces its sibling modules with directories, so it is built
# through a scratch module as well.
build_etcd() {
  [ -x "$ETCD_DIR/bin/etcd" ] && return 0
  (
    go_env "$ETCD_DIR"
    local src="$ETCD_DIR/src" logfile="$ETCD_DIR/build.log" gomod
    rm -rf "$src" "$ETCD_DIR/bin.tmp"
    mkdir -p "$src" "$ETCD_DIR/bin.tmp"
    : >"$logfile"
    cd "$src"
    log "building etcd $ETCD_VERSION from the Go module proxy (once)"
    echo "module rorc-build/probe" >go.mod
    build_step "$logfile" go mod download go.etcd.io/etcd/server/v3@"$ETCD_VERSION"
    gomod="$GOMODCACHE/cache/download/go.etcd.io/etcd/server/v3/@v/$ETCD_VERSION.mod"
    [ -f "$gomod" ] || die "no go.mod for go.etcd.io/etcd/server/v3@$ETCD_VERSION after download"
    scratch_module "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$gomod"
    build_step "$logfile" nice -n 10 go build -mod=mod -trimpath -ldflags "-s -w" \
      -o "$ETCD_DIR/bin.tmp/etcd" go.etcd.io/etcd/server/v3
    rm -rf "${ETCD_DIR:?}/bin"
    mv "$ETCD_DIR/bin.tmp" "$ETCD_DIR/bin"
    clean_go_caches "$ETCD_DIR"
  )
}

# Parallel test binaries may call `up` at the same time on a cold cache: one builds, the
# others wait for it.
build_all() {
  if k8s_built && [ -x "$ETCD_DIR/bin/etcd" ]; then return 0; fi
  need go flock
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/build.lock"
  flock 9
  build_etcd
  build_k8s
  flock -u 9
  exec 9>&-
}

port_in_use() {
  # A refused connection on loopback answers at once; an accepted one means it is taken.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Four ports: etcd client, etcd peer, kube-apiserver, kube-controller-manager.
pick_ports() {
  local tries base i free
  if [ -n "${RORC_K8S_BASE_PORT:-}" ]; then
    base=$RORC_K8S_BASE_PORT
    for i in 0 1 2 3; do
      port_in_use $((base + i)) && die "port $((base + i)) (from RORC_K8S_BASE_PORT) is in use"
    done
    echo "$base"
    return
  fi
  for tries in $(seq 1 50); do
    # Random bases in 20000..32764, below Linux's default ephemeral range (32768..60999), so
    # outgoing connections of other tests do not take them.
    base=$((20000 + RANDOM % 3192 * 4))
    free=1
    for i in 0 1 2 3; do
      if port_in_use $((base + i)); then free=0; fi
    done
    if [ "$free" = 1 ]; then
      echo "$base"
      return
    fi
  done
  die "found no four free ports after $tries tries"
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    # A small CA and a serving leaf signed by it: rustls (kube-rs) refuses a self-signed
    # server certificate that is also a CA, and wants the IP in subjectAltName.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.crt -days 3650 -subj "/CN=rorc-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout serving.key -out serving.csr -subj "/CN=127.0.0.1" 2>/dev/null
    cat >serving.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile serving.ext -out serving.crt 2>/dev/null
    # Service-account tokens are signed with this key and verified with its public half.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f serving.csr ca.srl
  )
}

write_kubeconfig() {
  local file=$1 url=$2 ca=$3 user=$4 token=$5
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rorc
  cluster:
    server: $url
    certificate-authority-data: $(base64 -w0 "$ca")
users:
- name: $user
  user:
    token: $token
contexts:
- name: rorc
  context:
    cluster: rorc
    user: $user
current-context: rorc
EOF
  chmod 600 "$file"
}

# Starts NAME in the background, logging to DIR/logs/NAME.log, and records its PID.
start() {
  local dir=$1 name=$2 bin=$3
  shift 3
  "$bin" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$dir/pids"
}

pid_of() {
  awk -v n="$2" '$1 == n { print $2 }' "$1/pids"
}

# Waits until URL answers "ok"-like BODY (a regex) while NAME runs; gives up after SECS.
wait_ready() {
  local dir=$1 name=$2 secs=$3 body=$4
  shift 4
  local pid deadline
  pid=$(pid_of "$dir" "$name")
  deadline=$((SECONDS + secs))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    if curl -fsS --max-time 2 "$@" 2>/dev/null | grep -qE "$body"; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# Explains which component did not come up, with its last log lines.
report_failure() {
  local dir=$1 name=$2 secs=$3 pid state
  pid=$(pid_of "$dir" "$name")
  if kill -0 "$pid" 2>/dev/null; then
    state="is running but was not healthy within ${secs}s"
  else
    state="exited"
  fi
  log "$name $state; last lines of $dir/logs/$name.log:"
  tail -n 25 "$dir/logs/$name.log" >&2 || true
}

# A port picked at random may be taken between the check and the bind: worth a retry on
# other ports. Ports chosen by RORC_K8S_BASE_PORT are not retried.
retry_on_conflict() {
  [ -z "${RORC_K8S_BASE_PORT:-}" ] && grep -qiE 'address already in use' "$1/logs/$2.log" 2>/dev/null
}

# One attempt at starting the three components on ports BASE..BASE+3. Returns 0 when all
# are healthy, 3 when a port was taken meanwhile (the caller retries), 1 on other failures.
start_all() {
  local dir=$1 base=$2
  local etcd_port=$base peer_port=$((base + 1)) api_port=$((base + 2)) kcm_port=$((base + 3))
  local url="https://127.0.0.1:$api_port" pki="$dir/pki"
  : >"$dir/pids"
  rm -rf "$dir/etcd"

  start "$dir" etcd "$ETCD_DIR/bin/etcd" \
    --name rorc --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "rorc=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level warn
  if ! wait_ready "$dir" etcd 30 '"health":"true"' "http://127.0.0.1:$etcd_port/health"; then
    retry_on_conflict "$dir" etcd && return 3
    report_failure "$dir" etcd 30
    return 1
  fi

  # Every request's user, verb, object and response code, for tests that check what a
  # client called (DIR/logs/audit.log, one JSON event per line).
  printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: ["RequestReceived"]\nrules:\n- level: Metadata\n' \
    >"$pki/audit-policy.yaml"
  # The "kubernetes" Service's endpoint reconciler is off: it would publish 127.0.0.1, which
  # Endpoints validation refuses.
  start "$dir" kube-apiserver "$K8S_DIR/bin/kube-apiserver" \
    --audit-policy-file "$pki/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
    --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --profiling=false
  if ! wait_ready "$dir" kube-apiserver 90 '^ok$' --cacert "$pki/ca.crt" \
    -H "Authorization: Bearer $ADMIN_TOKEN" "$url/readyz"; then
    retry_on_conflict "$dir" kube-apiserver && return 3
    report_failure "$dir" kube-apiserver 90
    return 1
  fi

  write_kubeconfig "$dir/kubeconfig" "$url" "$pki/ca.crt" admin "$ADMIN_TOKEN"
  write_kubeconfig "$pki/controller-manager.kubeconfig" "$url" "$pki/ca.crt" \
    system:kube-controller-manager "$KCM_TOKEN"

  local kcm_kc="$pki/controller-manager.kubeconfig"
  start "$dir" kube-controller-manager "$K8S_DIR/bin/kube-controller-manager" \
    --kubeconfig "$kcm_kc" --authentication-kubeconfig "$kcm_kc" \
    --authorization-kubeconfig "$kcm_kc" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
    --leader-elect=false \
    --controllers "$CONTROLLERS" \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --profiling=false
  if ! wait_ready "$dir" kube-controller-manager 60 '^ok$' --cacert "$pki/ca.crt" \
    "https://127.0.0.1:$kcm_port/healthz"; then
    retry_on_conflict "$dir" kube-controller-manager && return 3
    report_failure "$dir" kube-controller-manager 60
    return 1
  fi
  echo "$url" >"$dir/server"
  return 0
}

cmd_up() {
  local dir=$1
  need openssl curl base64 awk
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pids" ] && any_running "$dir"; then
    die "a control plane from $dir is still running; run '$0 down $dir' first"
  fi
  build_all
  mkdir -p "$dir/logs" "$dir/bin"
  rm -f "$dir/kubeconfig" "$dir/server"
  make_pki "$dir/pki"
  ADMIN_TOKEN=$(openssl rand -hex 24)
  KCM_TOKEN=$(openssl rand -hex 24)
  # Both users are cluster admins (system:masters): the controller manager then needs no
  # per-controller service-account credentials.
  {
    echo "$ADMIN_TOKEN,admin,admin,system:masters"
    echo "$KCM_TOKEN,system:kube-controller-manager,kube-controller-manager,system:masters"
  } >"$dir/pki/tokens.csv"
  chmod 600 "$dir/pki/tokens.csv"
  ln -sfn "$K8S_DIR/bin/kubectl" "$dir/bin/kubectl"

  # Whatever was started is stopped again if `up` fails or is interrupted half-way.
  trap 'stop_all "$dir"' EXIT
  trap 'exit 1' INT TERM HUP
  local attempt base rc
  for attempt in 1 2 3 4 5; do
    base=$(pick_ports)
    rc=0
    start_all "$dir" "$base" || rc=$?
    [ "$rc" = 0 ] && break
    stop_all "$dir"
    if [ "$rc" != 3 ]; then
      die "the control plane in $dir did not come up (logs: $dir/logs/)"
    fi
    log "a port near $base was taken meanwhile; retrying on other ports (attempt $attempt)"
  done
  [ "$rc" = 0 ] || die "could not find free ports for the control plane"
  trap - EXIT INT TERM HUP
  cat "$dir/server"
}

# True if the PID still runs the binary NAME (a reused PID is left alone).
is_ours() {
  local name=$1 pid=$2 exe
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = "$name" ]
}

any_running() {
  local name pid
  while read -r name pid; do
    is_ours "$name" "$pid" && return 0
  done <"$1/pids"
  return 1
}

# TERM to every component at once, KILL after a few seconds to whatever is left.
stop_all() {
  local dir=$1 name pid deadline
  [ -f "$dir/pids" ] || return 0
  local live=()
  while read -r name pid; do
    if is_ours "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$name:$pid")
    fi
  done <"$dir/pids"
  deadline=$((SECONDS + 5))
  local entry left
  while :; do
    left=()
    for entry in "${live[@]}"; do
      is_ours "${entry%%:*}" "${entry#*:}" && left+=("$entry")
    done
    [ ${#left[@]} -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      for entry in "${left[@]}"; do
        log "${entry%%:*} (pid ${entry#*:}) ignored TERM; killing it"
        kill -KILL "${entry#*:}" 2>/dev/null || true
      done
      sleep 0.2
      deadline=$((SECONDS + 5))
      continue
    fi
    sleep 0.1
  done
  rm -f "$dir/pids"
}

cmd_down() {
  local dir=$1
  [ -d "$dir" ] || die "no such directory: $dir"
  [ -f "$dir/pids" ] || {
    log "nothing to stop in $dir (no pids file)"
    return 0
  }
  stop_all "$dir"
}

case "${1:-}" in
up)
  [ $# -eq 2 ] || usage
  cmd_up "$2"
  ;;
down)
  [ $# -eq 2 ] || usage
  cmd_down "$2"
  ;;
build)
  [ $# -eq 1 ] || usage
  build_all
  echo "$K8S_DIR/bin"
  ;;
*) usage ;;
esac
