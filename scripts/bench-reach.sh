#!/usr/bin/env bash
# Reach benchmark (root), one run on the one-machine cluster: iperf3 TCP laptop <-> pod and
# ping RTT through kwg on each path (kwg join --transport udp|tcp|api-server), beside plain
# port-forwards of the same iperf3 server through the same API server (no WireGuard):
# kubectl port-forward, kwg's port-forward client and kube-rs's Api::portforward (both via
# cli/examples/portforward_proxy.rs); the time of `kwg join` on each path, and of a join in mode
# auto with UDP and TCP to the NodePort dropped in the laptop (only the API server left); ratios.
# Targets (issue 13): join <= 3 s on the API-server path; the API-server path carries >= 50 %
# of kubectl port-forward's throughput.
#   PROFILE=release SECS=5 [BUILD=0] [PATHS="udp tcp api-server only-api-server"] scripts/bench-reach.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
SECS=${SECS:-5}
PATHS=${PATHS:-"udp tcp api-server only-api-server"}
command -v iperf3 >/dev/null || { echo "iperf3 is missing: scripts/install-deps.sh installs it" >&2; exit 1; }

. scripts/lib/sim-iperf.sh
sim_bins --example portforward_proxy
PREFIX=kr$(( $$ % 10000 ))
WORK=$(mktemp -d)
FWD=

cleanup() {
    [ -n "$FWD" ] && kill "$FWD" 2>/dev/null || true
    [ -f "$WORK/iperf.pid" ] && kill "$(cat "$WORK/iperf.pid")" 2>/dev/null || true
    for d in "$WORK"/state-*; do
        [ -d "$d" ] && ip netns exec "$PREFIX-laptop" env KWG_STATE_DIR="$d" "$BINDIR/kwg" leave >/dev/null 2>&1 || true
    done
    ip netns exec "$PREFIX-laptop" nft delete table inet kwgbench 2>/dev/null || true
    "$BINDIR/kwg-sim" --prefix "$PREFIX" down >/dev/null 2>&1 || true
    rm -rf "$BINDIR" "$WORK"
}
trap cleanup EXIT

sim_up_with_iperf

# iperf3 up then down; a pause before each run lets the server finish the previous test (on the
# API-server path the previous test's last packets can still be in flight: "server is busy").
updown() {
    sleep 1; UP[$1]=$(iperf "$2" "$3" "")
    sleep 1; DOWN[$1]=$(iperf "$2" "$3" -R)
}
# Median ping RTT in ms to $1 (20 pings, 50 ms apart).
rtt() {
    { ip netns exec "$LAPTOP" ping -q -c 20 -i 0.05 -W 1 "$1" 2>/dev/null || true; } |
        awk -F/ '/^rtt/{print $5} END{}' | sed 's/^$/-/'
}
# Wait until something listens on laptop port $1.
listening() {
    for _ in $(seq 1 200); do
        ip netns exec "$LAPTOP" ss -Htln "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

declare -A UP DOWN RTT JOIN
# Plain port-forwards of the pod's iperf3 port through the API server.
ip netns exec "$LAPTOP" kubectl --kubeconfig "$ADMIN" -n emojivoto port-forward "pod/$POD" 15201:5201 >/dev/null 2>&1 &
FWD=$!
listening 15201
updown kubectl 127.0.0.1 15201
kill "$FWD"; wait "$FWD" 2>/dev/null || true; FWD=
for impl in kwg kube-rs; do
    ip netns exec "$LAPTOP" env KUBECONFIG="$ADMIN" "$BIN/examples/portforward_proxy" "$impl" 127.0.0.1:15202 emojivoto "$POD" 5201 >/dev/null 2>&1 &
    FWD=$!
    listening 15202
    updown "pf-$impl" 127.0.0.1 15202
    kill "$FWD"; wait "$FWD" 2>/dev/null || true; FWD=
done

# kwg join on each path (developer is a kwg user), then the same iperf3 server by pod IP.
# "only-api-server": --transport auto with UDP and TCP to the gateway's NodePort dropped in the
# laptop (its own nftables table), so the ladder must climb to the API server.
block() {
    ip netns exec "$LAPTOP" nft add table inet kwgbench
    ip netns exec "$LAPTOP" nft add chain inet kwgbench out '{ type filter hook output priority 0 ; }'
    ip netns exec "$LAPTOP" nft add rule inet kwgbench out meta l4proto '{ udp, tcp }' th dport 31820 drop
}
unblock() { ip netns exec "$LAPTOP" nft delete table inet kwgbench 2>/dev/null || true; }
for p in $PATHS; do
    state=$WORK/state-$p
    mkdir -m 700 "$state"
    mode=$p
    if [ "$p" = only-api-server ]; then mode=auto; block; fi
    t0=$(date +%s.%N)
    if ip netns exec "$LAPTOP" env KWG_STATE_DIR="$state" KUBECONFIG="$DEV" "$BINDIR/kwg" join --name "bench-$p" -n emojivoto --tun --transport "$mode" >"$WORK/join-$p.log" 2>&1; then
        t1=$(date +%s.%N)
        JOIN[$p]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
        path=$(ip netns exec "$LAPTOP" env KWG_STATE_DIR="$state" "$BINDIR/kwg" status -o json 2>/dev/null | jq -r '.transport.path // "?"')
        want=$p; [ "$p" = only-api-server ] && want=api-server
        [ "$path" = "$want" ] || echo "kwg join --transport $mode ($p): status says path $path" >&2
        RTT[$p]=$(rtt "$POD_IP")
        updown "$p" "$POD_IP" 5201
        ip netns exec "$LAPTOP" env KWG_STATE_DIR="$state" "$BINDIR/kwg" leave >/dev/null 2>&1 || true
        unblock
    else
        unblock
        echo "kwg join --transport $p failed: $(tail -n 3 "$WORK/join-$p.log")" >&2
        JOIN[$p]=-; RTT[$p]=-; UP[$p]=0; DOWN[$p]=0
    fi
done

echo "laptop <-> pod $POD_IP, $PROFILE build, iperf3 TCP ${SECS}s each (Gbit/s, receiver), ping median RTT"
printf "%-40s %8s %8s %9s %9s\n" path up down "RTT ms" "join s"
printf "%-40s %8s %8s %9s %9s\n" "kubectl port-forward (no WireGuard)" "${UP[kubectl]}" "${DOWN[kubectl]}" - -
printf "%-40s %8s %8s %9s %9s\n" "kwg port-forward client (no WireGuard)" "${UP[pf-kwg]}" "${DOWN[pf-kwg]}" - -
printf "%-40s %8s %8s %9s %9s\n" "kube-rs Api::portforward (no WireGuard)" "${UP[pf-kube-rs]}" "${DOWN[pf-kube-rs]}" - -
for p in $PATHS; do
    label="kwg join --transport $p"
    [ "$p" = only-api-server ] && label="kwg join, UDP+TCP to the node dropped"
    printf "%-40s %8s %8s %9s %9s\n" "$label" "${UP[$p]}" "${DOWN[$p]}" "${RTT[$p]}" "${JOIN[$p]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.0f %%", 100*a/b; else print "-" }'; }
echo "kwg port-forward client / kube-rs: up $(ratio "${UP[pf-kwg]}" "${UP[pf-kube-rs]}"), down $(ratio "${DOWN[pf-kwg]}" "${DOWN[pf-kube-rs]}")"
echo "kwg port-forward client / kubectl: up $(ratio "${UP[pf-kwg]}" "${UP[kubectl]}"), down $(ratio "${DOWN[pf-kwg]}" "${DOWN[kubectl]}")"
if [ -n "${UP[api-server]:-}" ]; then
    echo "API-server path / kubectl port-forward: up $(ratio "${UP[api-server]}" "${UP[kubectl]}"), down $(ratio "${DOWN[api-server]}" "${DOWN[kubectl]}") (target >= 50 %)"
    echo "join on the API-server path: forced ${JOIN[api-server]} s, auto with only the API server reachable ${JOIN[only-api-server]:--} s (target <= 3 s)"
fi
