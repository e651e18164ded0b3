#!/usr/bin/env bash
# kwg's walkthrough on the one-machine cluster (the telepresence "proxy outbound traffic"
# guide, with kwg in place of telepresence). Run as root on a fresh machine:
#
#   sudo scripts/demo.sh [--keep]
#
# Builds kwg, brings up the cluster (`kwg-sim up`), installs the gateway with
# `kubectl apply -k manifests/` as the cluster admin, then, on the laptop (a network namespace
# on the LAN, with the developer's kubeconfig): kwg join, status, curl by short and
# namespaced names, peers, the namespaces the developer's RBAC reaches and a refused one
# (kube-system), leave, and curl failing again. The LAN name
# intranet.corp.example keeps resolving throughout. Prints the time from `kwg join` to the
# first HTTP 200 and the time `kwg leave` takes. Tears everything down unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $a (only --keep)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (sudo scripts/demo.sh): it builds network namespaces" >&2
  exit 1
fi

bash scripts/install-deps.sh
echo "== build"
cargo build --workspace --bins --locked -q
BIN="$PWD/target/debug"
export KWG_BIN_DIR="$BIN"
export PATH="$BIN:$PATH"

P="${KWG_SIM_PREFIX:-kwgdemo}"
LAPTOP="$P-laptop"
export KWG_STATE_DIR="/run/kwg-sim/$P/kwg-state-laptop"

cleanup() {
  local rc=$?
  if [ "$KEEP" = 1 ]; then
    echo "== kept: ip netns exec $LAPTOP bash  (KWG_STATE_DIR=$KWG_STATE_DIR); kwg-sim down --prefix $P removes it"
  else
    ip netns exec "$LAPTOP" kwg leave >/dev/null 2>&1 || true
    kwg-sim down --prefix "$P" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT

echo "== cluster"
kwg-sim up --prefix "$P"
eval "$(kwg-sim env --prefix "$P")"
ADMIN="$KWG_SIM_ADMIN_KUBECONFIG"
export KUBECONFIG
# The API server is on the LAN (192.0.2.1): the admin works from the laptop too.
admin_kubectl() { ip netns exec "$LAPTOP" kubectl --kubeconfig "$ADMIN" "$@"; }

echo "== gateway: kubectl apply -k manifests/ (as admin)"
admin_kubectl apply -k manifests/
admin_kubectl -n kwg-gateway rollout status deployment/kwg-gateway --timeout=90s
for _ in $(seq 1 300); do
  admin_kubectl -n kwg-system get configmap kwg-gateway-info >/dev/null 2>&1 && break
  sleep 0.1
done

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
on_laptop() { echo "laptop\$ $*" >&2; ip netns exec "$LAPTOP" "$@"; }

echo "== walkthrough on the laptop ($LAPTOP)"
on_laptop dig +short intranet.corp.example

t0=$(date +%s%N)
on_laptop kwg join --namespace emojivoto
until ip netns exec "$LAPTOP" curl -s -o /dev/null --max-time 2 -w '%{http_code}' web-app:80 | grep -q 200; do
  [ "$(ms "$t0")" -lt 10000 ] || { echo "demo.sh: web-app:80 did not answer 200 within 10 s" >&2; exit 1; }
done
join_ms=$(ms "$t0")

on_laptop kwg status
on_laptop curl -s web-app:80 | sed -n '1,5p'  # sed reads it all: head could make curl fail (pipefail)
on_laptop curl -s web-app.emojivoto | grep -o '<title>.*</title>'
on_laptop curl -s echo.default | grep -o '<title>.*</title>'
on_laptop dig +short intranet.corp.example
on_laptop kwg peers

echo "== reach by RBAC: the developer's group 'developers' edits emojivoto and views default, nothing in kube-system"
DNS_POD=$(admin_kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[0].status.podIP}')
t2=$(date +%s%N)
if on_laptop curl -sS --max-time 3 -o /dev/null "http://$DNS_POD:53/"; then
  echo "demo.sh: kube-system's DNS pod $DNS_POD answered the developer" >&2
  exit 1
fi
echo "(refused in $(ms "$t2") ms: the gateway resets connections to a namespace the owner may not reach)"
for _ in $(seq 1 50); do
  ip netns exec "$LAPTOP" kwg status | grep -q '^Last refused' && break
  sleep 0.1
done
on_laptop kwg status | grep -E '^(Reachable ns|Last refused)'

t1=$(date +%s%N)
on_laptop kwg leave
leave_ms=$(ms "$t1")

if on_laptop curl -s --max-time 3 web-app:80 >/dev/null; then
  echo "demo.sh: web-app:80 still answers after kwg leave" >&2
  exit 1
else
  echo "(curl failed, as it should: the laptop is no longer joined)"
fi
on_laptop dig +short intranet.corp.example

echo "== timings"
echo "kwg join to first HTTP 200: ${join_ms} ms (target 1000 ms)"
echo "kwg leave:                  ${leave_ms} ms (target 200 ms)"
