#!/usr/bin/env bash
# Userspace mode benchmark (root): iperf3 TCP from a laptop to a pod of the one-machine
# cluster, once through the TUN path (kwg join --tun) and once through userspace mode
# (kwg join --userspace + kwg forward, as a user without privilege would), SECS seconds each
# direction, one run. Target: userspace carries >= 50 % of the TUN path's throughput.
#   PROFILE=release SECS=5 [BUILD=0] scripts/bench-userspace.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
SECS=${SECS:-5}
command -v iperf3 >/dev/null || { echo "iperf3 is missing: scripts/install-deps.sh installs it" >&2; exit 1; }

. scripts/lib/sim-iperf.sh
sim_bins
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

sim_up_with_iperf

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
