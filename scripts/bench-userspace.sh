#!/usr/bin/env bash
# Userspace mode benchmark (root): iperf3 TCP from a laptop to a pod of the one-machine
# cluster, once through the TUN path (kwg join --tun) and once through userspace mode
# (kwg join --userspace + kwg forward, as a user without privilege would), SECS seconds each
# direction, one run. Target: userspace carries >= 50 % of the TUN path's throughput.
#   PROFILE=release SECS=5 [BUILD=0] scripts/bench-userspace.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${PROFILE:-release}
SECS=${SECS:-5}
command -v iperf3 >/dev/null || { echo "iperf3 is missing: scripts/install-deps.sh installs it" >&2; exit 1; }

# BUILD=0 uses the binaries already built (another build holding the target dir's lock
# can make cargo wait for minutes).
if [ "${BUILD:-1}" = 1 ]; then
    if [ "$PROFILE" = release ]; then
        cargo build --release -p kwg -p kwg-gateway --bins
    else
        cargo build -p kwg -p kwg-gateway --bins
    fi
    cargo build -p kwg-sim
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/$PROFILE
BINDIR=$(mktemp -d)
chmod 755 "$BINDIR"   # the userspace run is as nobody
for b in kwg kwg-gateway; do ln -s "$BIN/$b" "$BINDIR/$b"; done
ln -s "$TARGET/debug/kwg-sim" "$BINDIR/kwg-sim"
export KWG_BIN_DIR=$BINDIR
PREFIX=ku$(( $$ % 10000 ))
WORK=$(mktemp -d)
chmod 755 "$WORK"
FWD=

cleanup() {
    [ -n "$FWD" ] && kill "$FWD" 2>/dev/null || true
    [ -f "$WORK/iperf.pid" ] && kill "$(cat "$WORK/iperf.pid")" 2>/dev/null || true
    for s in tun user; do
        [ -d "$WORK/$s" ] && ip netns exec "$PREFIX-laptop" env KWG_STATE_DIR="$WORK/$s" "$BINDIR/kwg" leave >/dev/null 2>&1 || true
    done
    "$BINDIR/kwg-sim" --prefix "$PREFIX" down >/dev/null 2>&1 || true
    rm -rf "$BINDIR" "$WORK"
}
trap cleanup EXIT

"$BINDIR/kwg-sim" --prefix "$PREFIX" up >/dev/null
LAPTOP=$PREFIX-laptop
ADMIN=/run/kwg-sim/$PREFIX/admin.kubeconfig
DEV=/run/kwg-sim/$PREFIX/developer.kubeconfig
kube() { ip netns exec "$LAPTOP" kubectl --kubeconfig "$ADMIN" "$@"; }
kube apply -k manifests/ >/dev/null
kube -n kwg-gateway scale deployment/kwg-gateway --replicas=1 >/dev/null
for _ in $(seq 1 300); do
    ready=$(kube -n kwg-gateway get pods -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)
    [ "$ready" = 1 ] && break
    sleep 0.2
done
POD=$(kube -n emojivoto get pods -l app=web-app -o jsonpath='{.items[0].metadata.name}')
POD_IP=$(kube -n emojivoto get pods -l app=web-app -o jsonpath='{.items[0].status.podIP}')
ip netns exec "$PREFIX-pod-emojivoto-$POD" iperf3 -s -D -p 5201 --pidfile "$WORK/iperf.pid" >/dev/null

# iperf3 TCP to $1:$2 for SECS s ($3: -R for pod -> laptop): receiver Gbit/s.
iperf() {
    { ip netns exec "$LAPTOP" iperf3 -c "$1" -p "$2" -t "$SECS" $3 -f g 2>/dev/null || true; } |
        awk '/receiver/{v=$(NF-2)} END{print v+0}'
}

# The TUN path, as root.
mkdir -m 700 "$WORK/tun"
ip netns exec "$LAPTOP" env KWG_STATE_DIR="$WORK/tun" KUBECONFIG="$DEV" "$BINDIR/kwg" join --name bench-tun -n emojivoto --tun >/dev/null
TUN_UP=$(iperf "$POD_IP" 5201 "")
TUN_DOWN=$(iperf "$POD_IP" 5201 -R)
ip netns exec "$LAPTOP" env KWG_STATE_DIR="$WORK/tun" "$BINDIR/kwg" leave >/dev/null

# Userspace mode, as nobody: kwg forward 127.0.0.1:15201 -> the pod's iperf3.
mkdir -m 700 "$WORK/user"
cp "$DEV" "$WORK/kubeconfig"
chown 65534:65534 "$WORK/user" "$WORK/kubeconfig"
as_nobody() {
    ip netns exec "$LAPTOP" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        env KWG_STATE_DIR="$WORK/user" KUBECONFIG="$WORK/kubeconfig" "$@"
}
as_nobody "$BINDIR/kwg" join --name bench-user -n emojivoto >/dev/null 2>&1
as_nobody "$BINDIR/kwg" forward "15201:$POD_IP:5201" 2>/dev/null &
FWD=$!
for _ in $(seq 1 100); do
    ip netns exec "$LAPTOP" ss -Htln 'sport = :15201' | grep -q . && break
    sleep 0.05
done
USER_UP=$(iperf 127.0.0.1 15201 "")
USER_DOWN=$(iperf 127.0.0.1 15201 -R)
kill "$FWD"; FWD=
as_nobody "$BINDIR/kwg" leave >/dev/null

echo "iperf3 TCP laptop <-> pod $POD_IP ($PROFILE build, ${SECS}s each, Gbit/s, receiver)"
printf "%-34s %8s %8s\n" path up down
printf "%-34s %8s %8s\n" "TUN (kwg join --tun)" "$TUN_UP" "$TUN_DOWN"
printf "%-34s %8s %8s\n" "userspace (kwg forward, smoltcp)" "$USER_UP" "$USER_DOWN"
awk -v tu="$TUN_UP" -v td="$TUN_DOWN" -v uu="$USER_UP" -v ud="$USER_DOWN" 'BEGIN {
    printf "userspace / TUN: up %.0f %%, down %.0f %% (target >= 50 %%)\n", 100*uu/tu, 100*ud/td }'
