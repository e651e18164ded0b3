#!/usr/bin/env bash
# The path users use, end to end: iperf3 TCP (1 and 4 streams, SECONDS_PER_RUN s each, default
# 5) from the laptop to an iperf3 pod behind a ClusterIP, in the one-machine cluster (tests/sim),
#   - through `kwg join` (the kwg client),
#   - through a wireguard-go client registered by hand per docs/contract.md against the same
#     gateway (a peer Secret with its public key; wg-quick-like setup with ip/wg in the laptop),
#   - from the node to the pod with no tunnel (the ceiling).
# The LAN is the sim's (LAN_MODEL=nic, the default: its machines send frames of at most the MTU
# and receive with GRO as NICs do; LAN_MODEL=previous: the LAN of earlier figures, whose
# datagrams this script cuts to the MTU itself, see wire() below; docs/architecture.md). Two more
# rows show kwg with the datagrams whole (only the sim can do that) and both clients with a node
# NIC that coalesces forwarded UDP (nic_gro() below), and one kwg through a virtual subnet
# (--map: every packet translated on the laptop, issue 27).
# Prints Gbit/s, the gateway's CPU seconds per GB carried (user + system time of the
# kwg-gateway process, from /proc/PID/stat) and the machine's (all CPUs, busy time, from
# /proc/stat: it includes the client, iperf3, softirq and anything else running), and the
# ratios, in one run. The gateway's figure also holds the softirq work its thread happens to run
# (kernels without IRQ time accounting charge it to the running task): with PERF=1 about 13-19 %
# of its samples, the node's routing and the pod's TCP receive among them. The machine's other load moves the absolute figures: compare the ratios
# of one run. Needs root. Usage: [LAN_MODEL=nic|previous] scripts/bench-e2e.sh
# BINS=DIR: kwg, kwg-gateway, kwg-wg and kwg-sim from DIR (e.g. copies of two builds for A/B
# runs; nothing is built). PERF=1: also where the CPU goes during one more 4-stream run of each
# client (perf sampling of the whole machine; kernel and user symbols; PERF_OUT=DIR keeps the
# perf.data files).
# PRIV=helper (issue 26): instead of the kwg and wireguard-go rows, kwg join three times in one run,
# (a) as root, kwg in one process (the rows above), and (b) as a normal user through a running
# kwg-helper, which creates the TUN and passes its descriptor to the user's daemon, then (a)
# again; prints (b) over the mean of the two (a) runs for 1 and 4 streams (target >= 0.95), the
# same for the gateway's CPU per GB, and the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SECONDS_PER_RUN:-5}
LAN_MODEL=${LAN_MODEL:-nic}

ME=bench-e2e.sh
. scripts/lib/sim-gateway.sh
gw_deps "$([[ ${PERF:-0} == 1 ]] && echo perf)"
# BUILD=0: use the release binaries already in target/ (another cargo may hold the lock).
if [[ ${PRIV:-root} == helper ]]; then gw_bins kwg-privhelper:kwg-helper; else gw_bins; fi

P=ke$(( $$ % 10000 )) STATE=$BINDIR/kwg-state
cleanup() {
  wggo_stop
  [[ -d $STATE ]] && dev kwg leave >/dev/null 2>&1 || true
  helper_stop
  "$BINDIR/kwg-sim" --prefix "$P" down >/dev/null 2>&1 || true
  rm -rf "$BINDIR"
}
trap cleanup EXIT
# As the developer on the laptop.
dev() { dev_in "$LAPTOP" "$STATE" "$@"; }
# join CMD...: a kwg join (CMD runs it: dev, or user below) or the script stops with its output.
join() {
  "$@" >"$BINDIR/join.log" 2>&1 ||
    { echo "$ME: $* failed:" >&2; cat "$BINDIR/join.log" >&2; exit 1; }
}

# PRIV=helper: the developer as a normal user of the laptop (uid HUID, no capability, its own
# home with a copy of the developer's kubeconfig and its state), served by a kwg-helper (root,
# in the laptop's namespace) on a socket in HDIR, like tests/e2e/tests/privilege.rs.
HUID=64051 HDIR=$BINDIR/priv HPID=
user() {
  dev_in "$LAPTOP" "$HDIR/home/kwg" env HOME="$HDIR/home" KUBECONFIG="$HDIR/home/.kube/config" \
    KWG_HELPER_SOCKET="$HDIR/helper.sock" setpriv --reuid "$HUID" --regid "$HUID" --clear-groups "$@"
}
helper_start() {
  mkdir -p "$HDIR/home/.kube"
  chmod 755 "$BINDIR" "$HDIR"
  cp "$RUN/developer.kubeconfig" "$HDIR/home/.kube/config"
  chown -R "$HUID:$HUID" "$HDIR/home"
  chmod 700 "$HDIR/home" && chmod 600 "$HDIR/home/.kube/config"
  ip netns exec "$LAPTOP" "$BINDIR/kwg-helper" serve --socket "$HDIR/helper.sock" \
    --journal "$HDIR/journal" --group kwg-bench-no-such-group --allow-uid "$HUID" \
    2>"$HDIR/helper.log" &
  HPID=$!
  wait_for "kwg-helper's socket" ls "$HDIR/helper.sock" >/dev/null
}
# Ends the user's session, then the helper (SIGTERM: it reverts what it still holds).
helper_stop() {
  [[ -n $HPID ]] || return 0
  user kwg leave >/dev/null 2>&1 || true
  kill "$HPID" 2>/dev/null || true
  wait "$HPID" 2>/dev/null || true
  HPID=
}

gw_cluster "$P" "$LAN_MODEL"

# iperf3 TCP from namespace $1 to $2 with $3 streams: receiver Gbit/s (one retry if the run
# fails, e.g. the server still finishing the previous one; its error goes to stderr).
throughput() {
  local out v
  for attempt in 1 2 3; do
    out=$(ip netns exec "$1" iperf3 -c "$2" -p 5201 -t "$DURATION" -P "$3" -f g 2>&1 || true)
    v=$(awk -v p="$3" '/receiver/ && (p == 1 || /SUM/) { v = $(NF-2) } END { printf "%.2f", v + 0 }' <<<"$out")
    [[ $v != 0.00 ]] && break
    echo "bench-e2e.sh: iperf3 -P $3 to $2 gave no result (attempt $attempt): $(grep -v '^ *$' <<<"$out" | tail -1)" >&2
    sleep 2
  done
  echo "$v"
}

# per_gb SECONDS_BEFORE SECONDS_AFTER GBITS_PER_S: CPU seconds per GB carried in the run.
per_gb() { awk -v a="$1" -v b="$2" -v g="$3" -v d="$DURATION" 'BEGIN { if (g > 0) printf "%.2f", (b - a) / (g * d / 8); else print "-" }'; }

declare -A T1 T4 G1 G4 M1 M4
run() { # NAME NS ADDR STREAMS: Gbit/s into T$4, CPU s/GB of the gateway (G$4) and machine (M$4)
  local g0 m0 v
  g0=$(gateway_cpu) m0=$(machine_cpu)
  v=$(throughput "$2" "$3" "$4")
  eval "T$4[\$1]=\$v"
  eval "G$4[\$1]=$(per_gb "$g0" "$(gateway_cpu)" "$v")"
  eval "M$4[\$1]=$(per_gb "$m0" "$(machine_cpu)" "$v")"
}
measure() { # NAME NS ADDR [no-gateway]
  reachable "$2" "$3"
  run "$1" "$2" "$3" 1
  run "$1" "$2" "$3" 4
  [[ ${4:-} == no-gateway ]] && G1[$1]=- G4[$1]=-
  printf '%-34s %8s Gbit/s %8s Gbit/s %7s %7s %7s %7s\n' "$1" "${T1[$1]}" "${T4[$1]}" \
    "${G1[$1]}" "${G4[$1]}" "${M1[$1]}" "${M4[$1]}"
}
# profile NAME NS ADDR: perf samples of the whole machine during one more 4-stream run; the
# gateway's top symbols, then the kernel's softirq (forwarding, NAT, veth) outside processes.
profile() {
  [[ ${PERF:-0} == 1 ]] || return 0
  local data=$BINDIR/perf-${1%% *}.data
  perf record -q -a -g -F 997 -o "$data" -- sleep "$DURATION" >/dev/null 2>&1 &
  local perf=$!
  sleep 0.2
  throughput "$2" "$3" 4 >/dev/null
  wait "$perf" || true
  echo "$1: where the gateway's CPU goes (perf, self time, top 15)"
  perf report -i "$data" --stdio --no-children --pid "$GWPID" --sort dso,sym 2>/dev/null |
    awk '/^ +[0-9.]+%/ && n++ < 15'
  echo "$1: the whole machine by process (top 10)"
  perf report -i "$data" --stdio --no-children --sort comm 2>/dev/null | awk '/^ +[0-9.]+%/ && n++ < 10'
  [[ -n ${PERF_OUT:-} ]] && cp "$data" "$PERF_OUT/"
  echo
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "iperf3 TCP ${DURATION} s per run, pod $POD_IP behind ClusterIP $SVC_IP (cluster $P, LAN model $LAN_MODEL)"
printf '%-34s %15s %15s %15s %15s\n' "" "" "" "gateway CPU" "machine CPU"
printf '%-34s %15s %15s %15s %15s\n' "path" "TCP 1 stream" "TCP 4 streams" "s/GB 1 / 4" "s/GB 1 / 4"
measure "node -> pod (no tunnel)" "$NODE" "$POD_IP" no-gateway

# The LAN as a wire: a machine's NIC sends frames of at most its MTU, so a UDP GSO datagram of
# up to 64 KB (what kwg's client and gateway send) is cut into MTU-sized datagrams when it
# leaves the laptop or the node (the nic LAN does so already; the previous one needs this). The
# sim's veths and bridge could carry it whole into the other side's socket, which no real
# network does: one row shows that path too, for comparison.
wire() { # on|off: segment what leaves the laptop's and the node's eth0, or not
  local segs=65535
  [[ $1 == on ]] && segs=1
  ip -n "$LAPTOP" link set eth0 gso_max_segs "$segs"
  ip -n "$NODE" link set eth0 gso_max_segs "$segs"
}
wire on
# A node NIC that coalesces forwarded UDP (`ethtool -K NIC rx-udp-gro-forwarding on`, the node
# operator's choice): the node's eth0 does GRO, UDP forwarding included. On the nic LAN its GRO
# runs already (the LAN's port toward it sends no TSO frames: a veth coalesces only frames its
# peer could not send whole); on the previous LAN this turns that on and off too.
nic_gro() { # on|off
  if [[ $LAN_MODEL == previous ]]; then
    local tso=on
    [[ $1 == on ]] && tso=off
    ip netns exec "$P-lan" ethtool -K p-node tso "$tso"
    ip netns exec "$NODE" ethtool -K eth0 gro "$1"
  fi
  ip netns exec "$NODE" ethtool -K eth0 rx-udp-gro-forwarding "$1"
}
# And as a switch: no host firewall on bridged frames (br_netfilter, when something on the host
# loaded it, runs the LAN namespace's hooks for each frame: ~2 % of the machine in perf).
if ip netns exec "$P-lan" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
  ip netns exec "$P-lan" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
    net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0
fi

join dev kwg join --name kwg-bench
measure "kwg join -> ClusterIP" "$LAPTOP" "$SVC_IP"
if [[ ${PRIV:-root} == helper ]]; then
  dev kwg leave >/dev/null 2>&1
  helper_start
  join user kwg join --name kwg-bench
  pid=$(jq -r .daemonPid "$HDIR/home/kwg/state.json")
  [[ $(awk '/^Uid:/ { print $2 }' "/proc/$pid/status") == "$HUID" ]] ||
    { echo "$ME: the user's daemon (pid $pid) does not run as uid $HUID" >&2; exit 1; }
  measure "kwg join as a user, via kwg-helper" "$LAPTOP" "$SVC_IP"
  # Root once more after the user, so neither side always runs first (a cluster and a gateway
  # that have run longer, the pod's TCP metrics cache): the user's figure is compared with the
  # mean of the root runs before and after it.
  helper_stop
  join dev kwg join --name kwg-bench
  measure "kwg join -> ClusterIP (again)" "$LAPTOP" "$SVC_IP"
  K="kwg join -> ClusterIP" K2="kwg join -> ClusterIP (again)" U="kwg join as a user, via kwg-helper"
  mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (a + b) / 2 }'; }
  echo
  printf '%-40s %9s %10s\n' "ratio" "1 stream" "4 streams"
  printf '%-40s %9s %10s\n' "user+helper / mean of root's (>= 0.95)" \
    "$(ratio "${T1[$U]}" "$(mean "${T1[$K]}" "${T1[$K2]}")")" \
    "$(ratio "${T4[$U]}" "$(mean "${T4[$K]}" "${T4[$K2]}")")"
  printf '%-40s %9s %10s\n' "gateway CPU/GB user / root's mean" \
    "$(ratio "${G1[$U]}" "$(mean "${G1[$K]}" "${G1[$K2]}")")" \
    "$(ratio "${G4[$U]}" "$(mean "${G4[$K]}" "${G4[$K2]}")")"
  echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
PROFILES=()
[[ ${PERF:-0} == 1 ]] && PROFILES+=("$(profile "kwg join -> ClusterIP" "$LAPTOP" "$SVC_IP")")
wire off
measure "kwg, LAN datagrams whole (sim)" "$LAPTOP" "$SVC_IP"
wire on
nic_gro on
measure "kwg, node NIC UDP GRO forwarding" "$LAPTOP" "$SVC_IP"
nic_gro off
dev kwg leave >/dev/null 2>&1
# Virtual subnets (issue 27), A/B against the row "kwg join -> ClusterIP": the same join with
# the Service CIDR forced onto another range (--map), so every packet is translated on the
# laptop (destination out, source in, checksums updated). The cluster's Service CIDR is the
# sim's default 10.96.0.0/12: its ClusterIP moves by the second octet.
MAPPED_IP=$(awk -F. -v OFS=. '{ $2 = $2 - 96 + 224; print }' <<<"$SVC_IP")
join dev kwg join --name kwg-bench --map 10.96.0.0/12=10.224.0.0/12
measure "kwg, mapped (virtual subnets)" "$LAPTOP" "$MAPPED_IP"
dev kwg leave >/dev/null 2>&1

# A wireguard-go client registered per docs/contract.md.
wggo_client "$LAPTOP" wggo "${P}w"
measure "wireguard-go client -> ClusterIP" "$LAPTOP" "$SVC_IP"
[[ ${PERF:-0} == 1 ]] && PROFILES+=("$(profile "wireguard-go client -> ClusterIP" "$LAPTOP" "$SVC_IP")")
nic_gro on
measure "wg-go, node NIC UDP GRO forwarding" "$LAPTOP" "$SVC_IP"
nic_gro off

K="kwg join -> ClusterIP" W="wireguard-go client -> ClusterIP" N="node -> pod (no tunnel)"
S="kwg, LAN datagrams whole (sim)" KG="kwg, node NIC UDP GRO forwarding"
WG="wg-go, node NIC UDP GRO forwarding"
echo
printf '%-28s %9s %10s\n' "ratio" "1 stream" "4 streams"
printf '%-28s %9s %10s\n' "kwg / wireguard-go client" "$(ratio "${T1[$K]}" "${T1[$W]}")" "$(ratio "${T4[$K]}" "${T4[$W]}")"
printf '%-28s %9s %10s\n' "(datagrams whole) / wg-go" "$(ratio "${T1[$S]}" "${T1[$W]}")" "$(ratio "${T4[$S]}" "${T4[$W]}")"
printf '%-28s %9s %10s\n' "(node UDP GRO) kwg / wg-go" "$(ratio "${T1[$KG]}" "${T1[$WG]}")" "$(ratio "${T4[$KG]}" "${T4[$WG]}")"
V="kwg, mapped (virtual subnets)"
printf '%-28s %9s %10s\n' "kwg mapped / kwg (>= 0.95)" "$(ratio "${T1[$V]}" "${T1[$K]}")" "$(ratio "${T4[$V]}" "${T4[$K]}")"
printf '%-28s %9s %10s\n' "kwg / no tunnel" "$(ratio "${T1[$K]}" "${T1[$N]}")" "$(ratio "${T4[$K]}" "${T4[$N]}")"
printf '%-28s %9s %10s\n' "wireguard-go / no tunnel" "$(ratio "${T1[$W]}" "${T1[$N]}")" "$(ratio "${T4[$W]}" "${T4[$N]}")"
printf '%-28s %9s %10s\n' "gateway CPU/GB kwg / wg-go" "$(ratio "${G1[$K]}" "${G1[$W]}")" "$(ratio "${G4[$K]}" "${G4[$W]}")"
if ((${#PROFILES[@]})); then echo; printf '%s\n' "${PROFILES[@]}"; fi
