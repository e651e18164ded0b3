# Sourced by the benches that carry clients' traffic through the gateway of the one-machine
# cluster (bench-e2e.sh, bench-gateway-load.sh). Run from the repository root, as root. The
# caller sets ME (its name, for messages) and defines cleanup() before calling gw_bins.

# gw_deps [perf]: installs the Debian packages the benches use when they are missing.
gw_deps() {
  [[ $EUID -eq 0 ]] || { echo "$ME: run as root (it builds a cluster in network namespaces)" >&2; exit 1; }
  local missing=()
  command -v iperf3 >/dev/null || missing+=(iperf3)
  command -v wireguard-go >/dev/null || missing+=(wireguard-go)
  command -v wg >/dev/null || missing+=(wireguard-tools)
  command -v jq >/dev/null || missing+=(jq)
  command -v ethtool >/dev/null || missing+=(ethtool)
  [[ ${1:-} == perf ]] && ! command -v perf >/dev/null && missing+=(linux-perf)
  if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# gw_bins [PACKAGE:BINARY...]: release kwg, kwg-gateway, kwg-wg and kwg-sim, and the binaries
# named (e.g. kwg-privhelper:kwg-helper), built unless BUILD=0 or BINS=DIR names binaries to
# use (e.g. copies of two builds for A/B runs), linked into a fresh BINDIR, which the sim's
# kubelet runs images from (KWG_BIN_DIR).
gw_bins() {
  local b pkgs=(-p kwg -p kwg-gateway -p kwg-wg -p kwg-sim) bins=(kwg kwg-gateway kwg-wg kwg-sim)
  for b in "$@"; do pkgs+=(-p "${b%%:*}") bins+=("${b#*:}"); done
  [[ ${BUILD:-1} == 0 || -n ${BINS:-} ]] || cargo build --release -q "${pkgs[@]}"
  BINS=$(realpath "${BINS:-$PWD/target/release}")
  BINDIR=$(mktemp -d)
  for b in "${bins[@]}"; do ln -s "$BINS/$b" "$BINDIR/$b"; done
  export KWG_BIN_DIR=$BINDIR
}

# wait_for WHAT CMD...: retries CMD (its output is the value) for up to 60 s.
wait_for() {
  local what=$1 out; shift
  for _ in $(seq 300); do
    out=$("$@" 2>/dev/null || true)
    [[ -n $out ]] && { echo "$out"; return; }
    sleep 0.2
  done
  echo "$ME: timed out waiting for $what" >&2; exit 1
}

# kubectl as the admin, from the laptop.
admin() { ip netns exec "$LAPTOP" kubectl --kubeconfig "$RUN/admin.kubeconfig" "$@"; }
# dev_in NS STATE CMD...: CMD as the developer on the machine NS with kwg's state in STATE.
dev_in() {
  local ns=$1 state=$2; shift 2
  ip netns exec "$ns" env KWG_STATE_DIR="$state" KUBECONFIG="$RUN/developer.kubeconfig" \
    PATH="$BINDIR:$PATH" "$@"
}

# gw_cluster PREFIX LAN_MODEL: the cluster with the gateway (one replica: every client goes
# through the same process) and an iperf3 pod (port 5201) behind a ClusterIP in namespace
# kwg-bench. Sets P, LAPTOP, NODE, RUN, INFO (the gateway info JSON), POD_IP, SVC_IP, GWPID.
gw_cluster() {
  P=$1 LAPTOP=$1-laptop NODE=$1-node RUN=/run/kwg-sim/$1
  "$BINDIR/kwg-sim" --prefix "$P" up --lan-model "$2" >/dev/null
  admin apply -k manifests/ >/dev/null
  admin -n kwg-gateway scale deployment/kwg-gateway --replicas=1 >/dev/null
  admin apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: kwg-bench}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: iperf3, namespace: kwg-bench}
spec:
  replicas: 1
  selector: {matchLabels: {app: iperf3}}
  template:
    metadata: {labels: {app: iperf3}}
    spec:
      containers:
        - name: iperf3
          image: iperf3
          command: [/usr/bin/iperf3, --server, --port, "5201"]
          ports: [{name: iperf3, containerPort: 5201}]
---
apiVersion: v1
kind: Service
metadata: {name: iperf3, namespace: kwg-bench}
spec:
  selector: {app: iperf3}
  ports: [{name: iperf3, port: 5201, targetPort: iperf3}]
---
# The sim's developer reaches only the namespaces it may see: view here, for the user itself
# (the wireguard-go clients' Secrets carry no kwg.io/groups: the gateway asks for the user alone).
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: developer-view, namespace: kwg-bench}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: developer}]
EOF
  wait_for "the gateway to be Ready" gw_ready >/dev/null
  wait_for "one gateway pod" gw_one >/dev/null
  INFO=$(wait_for "the gateway info" admin -n kwg-system get configmap kwg-gateway-info -o jsonpath='{.data.info\.json}')
  POD_IP=$(wait_for "the iperf3 pod" gw_iperf_pod_ip)
  SVC_IP=$(admin -n kwg-bench get service iperf3 -o jsonpath='{.spec.clusterIP}')
  GWPID=$(wait_for "the gateway process" gateway_pid)
}
gw_ready() {
  admin -n kwg-gateway get pods -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -m1 True
}
gw_one() { [[ $(admin -n kwg-gateway get pods -o name | wc -l) == 1 ]] && echo yes; }
gw_iperf_pod_ip() { admin -n kwg-bench get pods -l app=iperf3 -o jsonpath='{.items[0].status.podIP}'; }
# The iperf3 pod's network namespace.
gw_iperf_netns() {
  echo "$P-pod-kwg-bench-$(admin -n kwg-bench get pods -l app=iperf3 -o jsonpath='{.items[0].metadata.name}')"
}

# reachable NS ADDR [PORT]: an iperf3 connection from NS to ADDR:PORT (default 5201) works
# within 20 s.
reachable() {
  local port=${3:-5201}
  for _ in $(seq 40); do
    ip netns exec "$1" iperf3 -c "$2" -p "$port" -n 1K >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "$ME: $2:$port unreachable from $1" >&2; exit 1
}

# The gateway process (the one replica, in its pod's namespace).
gateway_pid() {
  local pod pid
  pod=$(admin -n kwg-gateway get pods -o jsonpath='{.items[0].metadata.name}')
  for pid in $(ip netns pids "$P-pod-kwg-gateway-$pod"); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == kwg-gateway ]] && { echo "$pid"; return; }
  done
}
TICK=$(getconf CLK_TCK)
# CPU seconds so far: the gateway's user + system time; the machine's busy time (all CPUs).
gateway_cpu() { sed 's/.*) //' "/proc/$GWPID/stat" | awk -v t="$TICK" '{ printf "%.2f", ($12 + $13) / t }'; }
machine_cpu() { awk -v t="$TICK" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / t }' /proc/stat; }
# The gateway's resident memory, MiB.
gateway_rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$GWPID/status"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# wggo_client NS NAME IFNAME: a wireguard-go client on machine NS registered per
# docs/contract.md against the gateway as peer NAME (a peer Secret with its public key, reach
# to kwg-bench; wg-quick-like setup with ip and wg), interface IFNAME (unique on this host:
# /var/run/wireguard is shared by every namespace). Appends its PID to WGPIDS and IFNAME to
# WGIFS (for cleanup).
WGPIDS=() WGIFS=()
wggo_client() {
  local ns=$1 name=$2 ifname=$3 dir=$BINDIR/wggo-$2 owner tip cidrs c
  mkdir -p "$dir"
  (umask 077; wg genkey > "$dir/key")
  wg pubkey < "$dir/key" > "$dir/pub"
  owner=$(dev_in "$ns" "$dir" kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
  dev_in "$ns" "$dir" kubectl -n kwg-system create secret generic "kwg-peer-$name" --type=kwg.io/peer \
    --from-literal=name="$name" --from-file=publicKey="$dir/pub" --from-literal=owner="$owner" \
    --from-literal=hostname="$name" --from-literal=namespaces=kwg-bench \
    --from-literal=leaseExpires="$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)" >/dev/null
  dev_in "$ns" "$dir" kubectl -n kwg-system label secret "kwg-peer-$name" kwg.io/peer=true >/dev/null
  tip=$(wait_for "the tunnel address of wireguard-go peer $name" wggo_tunnel_ip "$ns" "$name")
  cidrs=$(jq -r '[.serviceCidrs[], .podCidrs[], (.gatewayIp + "/32")] | join(",")' <<<"$INFO")
  WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go "$ifname" >"$dir/log" 2>&1 &
  WGPIDS+=($!) WGIFS+=("$ifname")
  wait_for "the wireguard-go UAPI socket of $name" ls "/var/run/wireguard/$ifname.sock" >/dev/null
  ip netns exec "$ns" wg set "$ifname" private-key "$dir/key" \
    peer "$(jq -r .publicKey <<<"$INFO")" endpoint "$(jq -r '.endpoints[0]' <<<"$INFO")" \
    allowed-ips "$cidrs" persistent-keepalive 25
  ip -n "$ns" addr add "$tip/32" dev "$ifname"
  ip -n "$ns" link set "$ifname" mtu 1420 up
  for c in ${cidrs//,/ }; do ip -n "$ns" route replace "$c" dev "$ifname"; done
}
wggo_tunnel_ip() {
  dev_in "$1" "$BINDIR" kubectl -n kwg-system get secret "kwg-peer-$2" -o jsonpath='{.metadata.annotations.kwg\.io/tunnel-ip}'
}
# Stops the wireguard-go clients started so far.
wggo_stop() {
  local pid ifname
  for pid in "${WGPIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for ifname in "${WGIFS[@]}"; do rm -f "/var/run/wireguard/$ifname.sock"; done
  WGPIDS=() WGIFS=()
}
