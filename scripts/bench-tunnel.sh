#!/usr/bin/env bash
# Throughput and latency of kwg-wg against the other userspace WireGuards and the raw veth, in
# one run. Two network namespaces joined by a veth pair; iperf3 TCP with 1 and 4 streams (5 s
# each) and ping RTT over: the veth itself (and over IPv6: the kernel's own ratio), wireguard-go (Debian), boringtun-cli, GotaTun
# (gotatun-cli), kwg-wg, and kwg-wg's tunnel carrying IPv6 inside (row kwg-wg IPv6: the same
# tunnel, the iperf3 traffic to the peer's IPv6 tunnel address; goal within 10 % of IPv4).
# Prints Gbit/s, RTT, every ratio kwg/other, the ratio IPv6/IPv4 inside kwg-wg's tunnel, and
# kwg-wg's segments per syscall on each edge (TUN read/write, UDP send/receive), for the
# IPv4 and the IPv6 rows. boringtun-cli and gotatun-cli are
# installed with `cargo install` into ~/.cargo/bin when missing (bench only). The machine's
# other load moves the absolute figures: compare the ratios of one run.
# PERF=1: also where kwg-wg's CPU goes (perf sampling of both sides during one more 1-stream
# run; kernel and user symbols; PERF_OUT=DIR keeps the perf.data files). IMPLS="kwg" runs only
# some of "wireguard-go boringtun gotatun kwg". Needs root.
# Usage: [SECONDS_PER_RUN=5] [PERF=1] scripts/bench-tunnel.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $EUID -eq 0 ]] || { echo "bench-tunnel.sh: run as root (it creates network namespaces)" >&2; exit 1; }
DURATION=${SECONDS_PER_RUN:-5}

missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wireguard-go >/dev/null || missing+=(wireguard-go)
command -v wg >/dev/null || missing+=(wireguard-tools)
command -v ping >/dev/null || missing+=(iputils-ping)
[[ ${PERF:-0} == 1 ]] && ! command -v perf >/dev/null && missing+=(linux-perf)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cargo_bin BIN CRATE: the path of BIN, installed from crates.io CRATE when missing.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
cargo_bin() {
  if command -v "$1" >/dev/null; then command -v "$1"; return; fi
  if [[ ! -x $CARGO_BIN/$1 ]]; then
    echo "bench-tunnel.sh: installing $2 (cargo install, a few minutes)" >&2
    cargo install --locked -q "$2" >&2
  fi
  echo "$CARGO_BIN/$1"
}
GOTATUN=$(cargo_bin gotatun gotatun-cli)
BORINGTUN=$(cargo_bin boringtun-cli boringtun-cli)

# BUILD=0: use the release binaries already in target/ (another cargo may hold the lock).
[[ ${BUILD:-1} == 0 ]] || cargo build --release -q -p kwg-wg --bin kwg-wg
KWG="${KWG_WG:-$PWD/target/release/kwg-wg}"  # KWG_WG=path: another build, for A/B runs

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
# IPv6 on the veth too: the kernel's own IPv6/IPv4 ratio, the baseline for kwg-wg's.
ip -n "$A" addr add fd91::1/64 dev va nodad; ip -n "$B" addr add fd91::2/64 dev vb nodad

ip netns exec "$B" iperf3 -s -D -p 5201 --pidfile "$WORK/iperf.pid" >/dev/null
sleep 0.3

# iperf3 TCP from A to $1 with $2 streams for $DURATION s: receiver Gbit/s.
throughput() {
  { ip netns exec "$A" iperf3 -c "$1" -p 5201 -t "$DURATION" -P "$2" -f g 2>/dev/null || true; } |
    awk -v p="$2" '/receiver/ && (p == 1 || /SUM/) { v = $(NF-2) } END { printf "%.2f", v + 0 }'
}

# ping RTT average in ms over 50 pings.
rtt() {
  { ip netns exec "$A" ping -q -c 50 -i 0.01 "$1" 2>/dev/null || true; } |
    awk -F'/' '/^rtt|^round-trip/ { printf "%.3f", $5 }'
}

(umask 077; wg genkey > "$WORK/ka"; wg genkey > "$WORK/kb")

# tunnel IMPL NAME: start IMPL in the foreground on both sides (interfaces NAMEa in A, NAMEb in
# B: the UAPI socket directory is shared by all namespaces), configure with wg, address
# 10.90.0.x/24 and fd90::x/64 (IPv6 inside the tunnel; the outer UDP stays IPv4). kwg-wg writes its counters to $WORK/stats-{a,b} on SIGUSR1.
tunnel() {
  local impl=$1 ia="${2}a" ib="${2}b" side
  for side in a b; do
    local ns=$A cmd=()
    [[ $side == b ]] && ns=$B
    case $impl in
      kwg) cmd=(env KWG_WG_STATS="$WORK/stats-$side" "$KWG" --foreground) ;;
      wireguard-go) cmd=(env WG_PROCESS_FOREGROUND=1 wireguard-go) ;;
      gotatun) cmd=("$GOTATUN" --foreground --disable-drop-privileges) ;;
      boringtun) cmd=("$BORINGTUN" --foreground --disable-drop-privileges) ;;
    esac
    ip netns exec "$ns" "${cmd[@]}" "$2$side" >"$WORK/$impl-$side.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 50); do
    [[ -S /var/run/wireguard/$ia.sock && -S /var/run/wireguard/$ib.sock ]] && break
    sleep 0.1
  done
  local fail="bench-tunnel.sh: the $impl tunnel"
  ip netns exec "$A" wg set "$ia" private-key "$WORK/ka" listen-port 51820 \
    peer "$(wg pubkey < "$WORK/kb")" endpoint 192.168.90.2:51820 allowed-ips 10.90.0.2/32,fd90::2/128 &&
  ip netns exec "$B" wg set "$ib" private-key "$WORK/kb" listen-port 51820 \
    peer "$(wg pubkey < "$WORK/ka")" allowed-ips 10.90.0.1/32,fd90::1/128 ||
    { echo "$fail cannot be configured with wg; its logs:" >&2; cat "$WORK/$impl"-*.log >&2; exit 1; }
  ip -n "$A" addr add 10.90.0.1/24 dev "$ia"; ip -n "$A" link set "$ia" mtu 1420 up
  ip -n "$B" addr add 10.90.0.2/24 dev "$ib"; ip -n "$B" link set "$ib" mtu 1420 up
  ip -n "$A" addr add fd90::1/64 dev "$ia" nodad; ip -n "$B" addr add fd90::2/64 dev "$ib" nodad
  ip netns exec "$A" ping -q -c 5 -i 0.2 -W 1 10.90.0.2 >/dev/null ||
    { echo "$fail does not pass traffic; its logs:" >&2; cat "$WORK/$impl"-*.log >&2; exit 1; }
}

untunnel() {
  ip -n "$A" link del "${1}a" 2>/dev/null || true
  ip -n "$B" link del "${1}b" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  rm -f /var/run/wireguard/"$1"*.sock
}

# kwg_snapshot LABEL: the kwg-wg counters of both sides now, into $WORK/snap-LABEL-{a,b}.
kwg_snapshot() {
  local side
  rm -f "$WORK"/stats-?
  kill -USR1 "${PIDS[@]}"
  for _ in $(seq 50); do
    [[ -f $WORK/stats-a && -f $WORK/stats-b ]] && break
    sleep 0.05
  done
  for side in a b; do cp "$WORK/stats-$side" "$WORK/snap-$1-$side"; done
}

# kwg_per_call FROM TO SIDE EDGE: segments per syscall on EDGE between two snapshots.
kwg_per_call() {
  awk -v e="$4" '
    $1 == e { split($2, c, "="); split($3, s, "="); calls[FILENAME] = c[2]; segs[FILENAME] = s[2]; f[++n] = FILENAME }
    END { dc = calls[f[2]] - calls[f[1]]; ds = segs[f[2]] - segs[f[1]]
          if (dc > 0) printf "%.1f", ds / dc; else printf "-" }' \
    "$WORK/snap-$1-$3" "$WORK/snap-$2-$3"
}

# kwg_profile: perf samples of each kwg-wg during a 1-stream run; the top symbols per side.
kwg_profile() {
  local i side perfs=()
  for i in 0 1; do
    perf record -q -F 997 -g -p "${PIDS[$i]}" -o "$WORK/perf-$i.data" -- sleep "$DURATION" \
      >/dev/null 2>&1 &
    perfs+=($!)
  done
  sleep 0.2
  throughput 10.90.0.2 1 >/dev/null
  wait "${perfs[@]}" || true
  for i in 0 1; do
    side=sender; ((i == 1)) && side=receiver
    echo "kwg-wg $side: where the CPU goes (perf, self time, top 15)"
    perf report -i "$WORK/perf-$i.data" --stdio --no-children --sort dso,sym 2>/dev/null |
      awk '/^ +[0-9.]+%/ && n++ < 15'
    [[ -n ${PERF_OUT:-} ]] && cp "$WORK/perf-$i.data" "$PERF_OUT/kwg-wg-$side.perf.data"
  done
  echo
}

declare -A T1 T4 RTT
read -ra IMPLS <<<"${IMPLS:-wireguard-go boringtun gotatun kwg}"
measure() { # NAME ADDR [kwg [SNAPSHOT_PREFIX]]
  local s=${4:-}
  if [[ ${3:-} == kwg ]]; then kwg_snapshot "${s}start"; fi
  T1[$1]=$(throughput "$2" 1)
  if [[ ${3:-} == kwg ]]; then kwg_snapshot "${s}one"; fi
  T4[$1]=$(throughput "$2" 4)
  if [[ ${3:-} == kwg ]]; then kwg_snapshot "${s}four"; fi
  RTT[$1]=$(rtt "$2")
  printf '%-14s %8s Gbit/s %8s Gbit/s %9s ms\n' "$1" "${T1[$1]}" "${T4[$1]}" "${RTT[$1]}"
}

echo "iperf3 TCP ${DURATION} s per run; $("$GOTATUN" --version 2>/dev/null | head -1), $("$BORINGTUN" --version 2>/dev/null | head -1), wireguard-go $(wireguard-go --version 2>/dev/null | awk '{print $2; exit}')"
printf '%-14s %15s %15s %12s\n' "path" "TCP 1 stream" "TCP 4 streams" "ping RTT"
measure veth 192.168.90.2
measure "veth IPv6" fd91::2
n=0
for impl in "${IMPLS[@]}"; do
  name="${P}$((n++))"
  tunnel "$impl" "$name"
  [[ $impl == kwg ]] && label=kwg-wg || label=$impl
  measure "$label" 10.90.0.2 "$impl"
  # The same tunnel carrying IPv6 inside.
  [[ $impl == kwg ]] && measure "kwg-wg IPv6" fd90::2 kwg v6
  [[ $impl == kwg && ${PERF:-0} == 1 ]] && kwg_profile
  untunnel "$name"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
printf '%-24s %9s %10s\n' "kwg-wg / other" "1 stream" "4 streams"
for other in veth wireguard-go boringtun gotatun; do
  printf '%-24s %9s %10s\n' "kwg-wg / $other" "$(ratio "${T1[kwg-wg]:-0}" "${T1[$other]:-0}")" \
    "$(ratio "${T4[kwg-wg]:-0}" "${T4[$other]:-0}")"
done
if [[ -n ${T1[kwg-wg IPv6]:-} ]]; then
  printf '%-24s %9s %10s   (goal: at least 0.90)\n' "kwg-wg IPv6 / IPv4" \
    "$(ratio "${T1[kwg-wg IPv6]}" "${T1[kwg-wg]:-0}")" "$(ratio "${T4[kwg-wg IPv6]}" "${T4[kwg-wg]:-0}")"
  printf '%-24s %9s %10s   (the kernel alone)\n' "veth IPv6 / IPv4" \
    "$(ratio "${T1[veth IPv6]}" "${T1[veth]:-0}")" "$(ratio "${T4[veth IPv6]}" "${T4[veth]:-0}")"
fi
echo
printf 'added RTT over the veth:'
for other in wireguard-go boringtun gotatun kwg-wg "kwg-wg IPv6"; do
  [[ -n ${RTT[$other]:-} ]] || continue
  base=veth; [[ $other == *IPv6 ]] && base="veth IPv6"  # IPv6 against the veth's IPv6
  printf ' %s %s ms;' "$other" "$(awk -v a="${RTT[$other]}" -v b="${RTT[$base]}" 'BEGIN { printf "%.3f", a - b }')"
done
echo
[[ -f $WORK/snap-four-a ]] || exit 0
echo
echo "kwg-wg segments per syscall (a = sender side of the iperf3 data, b = receiver side)"
printf '%-10s %9s %10s %9s %9s\n' "run/side" "TUN read" "TUN write" "UDP send" "UDP recv"
for run in "start one 1-stream" "one four 4-streams" "v6start v6one 1-str-v6" "v6one v6four 4-str-v6"; do
  set -- $run
  [[ -f $WORK/snap-$2-a ]] || continue
  for side in a b; do
    printf '%-10s %9s %10s %9s %9s\n' "$3/$side" "$(kwg_per_call "$1" "$2" "$side" tun_read)" \
      "$(kwg_per_call "$1" "$2" "$side" tun_write)" "$(kwg_per_call "$1" "$2" "$side" udp_send)" \
      "$(kwg_per_call "$1" "$2" "$side" udp_recv)"
  done
done
