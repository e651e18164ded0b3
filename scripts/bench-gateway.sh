#!/usr/bin/env bash
# Gateway benchmark (root): registers COUNTS peers (default 1,000 then 10,000) on a fresh
# one-machine cluster, prints the gateway's RSS at each size, then the time from a new peer's
# Secret to its tunnel IP and to its first WireGuard handshake (wireguard-go + wg as the peer).
# Targets: 10,000 peers in <= 100 MB RSS; a new peer usable <= 200 ms after its Secret.
#   COUNTS="1000 10000" SAMPLES=10 PROFILE=release scripts/bench-gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COUNTS=${COUNTS:-"1000 10000"}
SAMPLES=${SAMPLES:-10}
PROFILE=${PROFILE:-release}

if [ "$PROFILE" = release ]; then
    cargo build --release -p kwg-gateway --bins --examples
else
    cargo build -p kwg-gateway --bins --examples
fi
cargo build -p kwg-sim
BIN=$ROOT/target/$PROFILE

# The sim's kubelet runs the gateway image as the binary it finds in KWG_BIN_DIR.
BINDIR=$(mktemp -d)
ln -s "$ROOT/target/debug/kwg-sim" "$BINDIR/kwg-sim"
ln -s "$BIN/kwg-gateway" "$BINDIR/kwg-gateway"
export KWG_BIN_DIR=$BINDIR
PREFIX=kb$(( $$ % 10000 ))
IFNAME=kb$(( $$ % 10000 ))w
WGPID=

cleanup() {
    [ -n "$WGPID" ] && kill "$WGPID" 2>/dev/null || true
    rm -f "/var/run/wireguard/$IFNAME.sock"
    "$BINDIR/kwg-sim" --prefix "$PREFIX" down >/dev/null 2>&1 || true
    rm -rf "$BINDIR"
}
trap cleanup EXIT

"$BINDIR/kwg-sim" --prefix "$PREFIX" up >/dev/null
LAPTOP=$PREFIX-laptop
ADMIN=/run/kwg-sim/$PREFIX/admin.kubeconfig
kube() { ip netns exec "$LAPTOP" kubectl --kubeconfig "$ADMIN" "$@"; }

kube apply -k manifests/ >/dev/null
POD=
for _ in $(seq 1 300); do
    POD=$(kube -n kwg-gateway get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | awk '$2=="True"{print $1; exit}')
    [ -n "$POD" ] && break
    sleep 0.2
done
[ -n "$POD" ] || { echo "the gateway did not become ready" >&2; exit 1; }
PID=
for p in $(ip netns pids "$PREFIX-pod-kwg-gateway-$POD"); do
    [ "$(cat "/proc/$p/comm")" = kwg-gateway ] && PID=$p
done
[ -n "$PID" ] || { echo "cannot find the gateway process" >&2; exit 1; }
rss_mib() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$PID/status"; }

echo "kwg-gateway ($PROFILE build), cluster $PREFIX"
printf "%-8s %10s\n" peers "RSS MiB"
printf "%-8s %10s\n" 0 "$(rss_mib)"
LAST_RSS=0
for n in $COUNTS; do
    ip netns exec "$LAPTOP" env KUBECONFIG="$ADMIN" "$BIN/examples/bench_load" register "$n" >&2
    sleep 2
    LAST_RSS=$(rss_mib)
    printf "%-8s %10s\n" "$n" "$LAST_RSS"
done

ip netns exec "$LAPTOP" wireguard-go -f "$IFNAME" >/dev/null 2>&1 &
WGPID=$!
for _ in $(seq 1 100); do [ -S "/var/run/wireguard/$IFNAME.sock" ] && break; sleep 0.05; done
ip -n "$LAPTOP" link set "$IFNAME" up
LAT=$(ip netns exec "$LAPTOP" env KUBECONFIG="$ADMIN" "$BIN/examples/bench_load" latency "$IFNAME" "$SAMPLES")
echo "$LAT"
HS=$(echo "$LAT" | awk '/first handshake/{print $6}')
LAST=${COUNTS##* }
awk -v rss="$LAST_RSS" -v n="$LAST" -v hs="$HS" 'BEGIN {
    printf "RSS at %d peers / 100 MB target: %.2f (<= 1 meets it)\n", n, rss * 1.048576 / 100;
    printf "median Secret->handshake / 200 ms target: %.2f (<= 1 meets it)\n", hs / 200 }'
