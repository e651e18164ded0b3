# Sourced by the iperf3 benches on the one-machine cluster (bench-reach.sh, ...). Expects
# BINDIR (holding kwg-sim), PREFIX and WORK; run from the repository root.

# Brings the cluster up with the gateway (one replica, ready) and an iperf3 server on port 5201
# in emojivoto's web-app pod. Sets LAPTOP, ADMIN, DEV, POD, POD_IP; defines kube().
sim_up_with_iperf() {
    "$BINDIR/kwg-sim" --prefix "$PREFIX" up >/dev/null
    LAPTOP=$PREFIX-laptop
    ADMIN=/run/kwg-sim/$PREFIX/admin.kubeconfig
    DEV=/run/kwg-sim/$PREFIX/developer.kubeconfig
    kube() { ip netns exec "$LAPTOP" kubectl --kubeconfig "$ADMIN" "$@"; }
    kube apply -k manifests/ >/dev/null
    kube -n kwg-gateway scale deployment/kwg-gateway --replicas=1 >/dev/null
    local ready
    for _ in $(seq 1 300); do
        ready=$(kube -n kwg-gateway get pods -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)
        [ "$ready" = 1 ] && break
        sleep 0.2
    done
    POD=$(kube -n emojivoto get pods -l app=web-app -o jsonpath='{.items[0].metadata.name}')
    POD_IP=$(kube -n emojivoto get pods -l app=web-app -o jsonpath='{.items[0].status.podIP}')
    ip netns exec "$PREFIX-pod-emojivoto-$POD" iperf3 -s -D -p 5201 --pidfile "$WORK/iperf.pid" >/dev/null
}

# iperf3 TCP from the laptop to $1:$2 for SECS s ($3: -R for pod -> laptop): receiver Gbit/s.
iperf() {
    { ip netns exec "$LAPTOP" iperf3 -c "$1" -p "$2" -t "$SECS" $3 -f g 2>/dev/null || true; } |
        awk '/receiver/{v=$(NF-2)} END{printf "%.3f\n", v+0}'
}

# Builds kwg and kwg-gateway in PROFILE (with the extra cargo arguments given, e.g. an
# --example) and kwg-sim, unless BUILD=0 (another build holding the target dir's lock can make
# cargo wait for minutes); links them into a fresh BINDIR (0755: runs as nobody can use it) and
# exports KWG_BIN_DIR. Sets BIN (binaries from CARGO_TARGET_DIR when set).
sim_bins() {
    local target=${CARGO_TARGET_DIR:-$PWD/target} b
    if [ "${BUILD:-1}" = 1 ]; then
        if [ "$PROFILE" = release ]; then
            cargo build --release -p kwg -p kwg-gateway --bins "$@"
        else
            cargo build -p kwg -p kwg-gateway --bins "$@"
        fi
        cargo build -p kwg-sim
    fi
    BIN=$target/$PROFILE
    BINDIR=$(mktemp -d)
    chmod 755 "$BINDIR"
    for b in kwg kwg-gateway; do ln -s "$BIN/$b" "$BINDIR/$b"; done
    ln -s "$target/debug/kwg-sim" "$BINDIR/kwg-sim"
    export KWG_BIN_DIR=$BINDIR
}
