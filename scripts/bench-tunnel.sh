#!/usr/bin/env bash
# Throughput and latency of kwg-wg against wireguard-go and the raw veth, in one run.
# Two network namespaces joined by a veth pair; iperf3 TCP with 1 and 4 streams (5 s each) and
# ping RTT over: the veth itself, a wireguard-go tunnel, a kwg-wg tunnel. Prints Gbit/s, RTT and
# the ratios kwg/wireguard-go and kwg/veth. Needs root. Usage: scripts/bench-tunnel.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $EUID -eq 0 ]] || { echo "bench-tunnel.sh: run as root (it creates network namespaces)" >&2; exit 1; }

missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wireguard-go >/dev/null || missing+=(wireguard-go)
command -v wg >/dev/null || missing+=(wireguard-tools)
command -v ping >/dev/null || missing+=(iputils-ping)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release -q -p kwg-wg --bin kwg-wg
KWG="$PWD/target/release/kwg-wg"

P="kb$(( $$ % 100000 ))"
A="${P}a"; B="${P}b"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f "$WORK/iperf.pid" ]] && kill "$(cat "$WORK/iperf.pid")" 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  sleep 0.5
  rm -f /var/run/wireguard/"${P}"*.sock
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$A"; ip netns add "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
ip -n "$A" link add va type veth peer name vb netns "$B"
ip -n "$A" addr add 192.168.90.1/24 dev va; ip -n "$A" link set va up
ip -n "$B" addr add 192.168.90.2/24 dev vb; ip -n "$B" link set vb up

ip netns exec "$B" iperf3 -s -D -p 5201 --pidfile "$WORK/iperf.pid" >/dev/null
sleep 0.3

# iperf3 TCP from A to $1 with $2 streams for 5 s: receiver Gbit/s.
throughput() {
  { ip netns exec "$A" iperf3 -c "$1" -p 5201 -t 5 -P "$2" -f g 2>/dev/null || true; } |
    awk -v p="$2" '/receiver/ && (p == 1 || /SUM/) { v = $(NF-2) } END { printf "%.2f", v + 0 }'
}

# ping RTT average in ms over 50 pings.
rtt() {
  { ip netns exec "$A" ping -q -c 50 -i 0.01 "$1" 2>/dev/null || true; } |
    awk -F'/' '/^rtt|^round-trip/ { printf "%.3f", $5 }'
}

(umask 077; wg genkey > "$WORK/ka"; wg genkey > "$WORK/kb")

# tunnel IMPL NAME: start IMPL on both sides (interfaces NAMEa in A, NAMEb in B: the UAPI socket
# directory is shared by all namespaces), configure with wg, address 10.90.0.x/24.
tunnel() {
  local impl=$1 ia="${2}a" ib="${2}b"
  if [[ $impl == kwg ]]; then
    ip netns exec "$A" "$KWG" "$ia"
    ip netns exec "$B" "$KWG" "$ib"
  else
    WG_PROCESS_FOREGROUND=1 ip netns exec "$A" wireguard-go "$ia" >/dev/null 2>&1 &
    PIDS+=($!)
    WG_PROCESS_FOREGROUND=1 ip netns exec "$B" wireguard-go "$ib" >/dev/null 2>&1 &
    PIDS+=($!)
  fi
  for _ in $(seq 50); do
    [[ -S /var/run/wireguard/$ia.sock && -S /var/run/wireguard/$ib.sock ]] && break
    sleep 0.1
  done
  ip netns exec "$A" wg set "$ia" private-key "$WORK/ka" listen-port 51820 \
    peer "$(wg pubkey < "$WORK/kb")" endpoint 192.168.90.2:51820 allowed-ips 10.90.0.2/32
  ip netns exec "$B" wg set "$ib" private-key "$WORK/kb" listen-port 51820 \
    peer "$(wg pubkey < "$WORK/ka")" allowed-ips 10.90.0.1/32
  ip -n "$A" addr add 10.90.0.1/24 dev "$ia"; ip -n "$A" link set "$ia" mtu 1420 up
  ip -n "$B" addr add 10.90.0.2/24 dev "$ib"; ip -n "$B" link set "$ib" mtu 1420 up
  ip netns exec "$A" ping -q -c 5 -i 0.2 -W 1 10.90.0.2 >/dev/null ||
    { echo "bench-tunnel.sh: the $impl tunnel does not pass traffic" >&2; exit 1; }
}

untunnel() {
  ip -n "$A" link del "${1}a" 2>/dev/null || true
  ip -n "$B" link del "${1}b" 2>/dev/null || true
  sleep 0.5
}

declare -A T1 T4 RTT
measure() { # NAME ADDR
  T1[$1]=$(throughput "$2" 1); T4[$1]=$(throughput "$2" 4); RTT[$1]=$(rtt "$2")
  printf '%-14s %8s Gbit/s %8s Gbit/s %9s ms\n' "$1" "${T1[$1]}" "${T4[$1]}" "${RTT[$1]}"
}

printf '%-14s %15s %15s %12s\n' "path" "TCP 1 stream" "TCP 4 streams" "ping RTT"
measure veth 192.168.90.2
tunnel wggo "${P}g"; measure wireguard-go 10.90.0.2; untunnel "${P}g"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; PIDS=()
tunnel kwg "${P}k"; measure kwg-wg 10.90.0.2; untunnel "${P}k"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "kwg/wireguard-go throughput: 1 stream $(ratio "${T1[kwg-wg]}" "${T1[wireguard-go]}"), 4 streams $(ratio "${T4[kwg-wg]}" "${T4[wireguard-go]}")"
echo "kwg/veth throughput:         1 stream $(ratio "${T1[kwg-wg]}" "${T1[veth]}"), 4 streams $(ratio "${T4[kwg-wg]}" "${T4[veth]}")"
echo "added RTT over veth: kwg-wg $(awk -v a="${RTT[kwg-wg]}" -v b="${RTT[veth]}" 'BEGIN { printf "%.3f", a - b }') ms, wireguard-go $(awk -v a="${RTT[wireguard-go]}" -v b="${RTT[veth]}" 'BEGIN { printf "%.3f", a - b }') ms"
