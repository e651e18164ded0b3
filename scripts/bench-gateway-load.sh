#!/usr/bin/env bash
# The gateway under many laptops (issue 31): 1, 4 and 16 laptops of the one-machine cluster
# (tests/sim; LAN_MODEL=nic, the default, or previous, as bench-e2e.sh), each running one bounded
# iperf3 TCP upload (SECONDS_PER_RUN s, default 5) at the same time through the same gateway
# (one replica) to its own iperf3 server in the iperf3 pod,
#   - every laptop joined with `kwg join` (the kwg client),
#   - then every laptop with a wireguard-go client registered per docs/contract.md instead.
# Prints, per client and number of laptops: the aggregate Gbit/s (the receivers' bytes over the
# run), the gateway's CPU seconds per GB carried (user + system time of the kwg-gateway process,
# from /proc/PID/stat; it also holds the softirq work its thread happens to run, see
# bench-e2e.sh) and its RSS after the run; then the ratios of one run: CPU per GB of the most
# laptops over one laptop's (target: at most 1.10) and kwg over wireguard-go. "gw GRO": the
# frames arriving at the gateway's pod per packet it writes into its TUN (how many TCP
# segments its GRO coalesced into one; about 1 for traffic that arrives coalesced already).
# Why it coalesces or not: "dgram/recv", the datagrams the gateway's socket held per receive
# call (its /metrics); "rcvbuf drop", datagrams dropped at the gateway's full socket buffer
# (RcvbufErrors in its pod's namespace); "ctxsw/MB", the gateway threads' context switches per
# MB carried; "retransmit", the uploads' TCP retransmissions. The machine's other
# load moves the absolute figures: compare the ratios of one run.
# Needs root. Usage: [LAPTOPS="1 4 16"] [LAN_MODEL=nic|previous] scripts/bench-gateway-load.sh
# LAPTOPS: the counts measured (the largest is how many laptops are made; at most 41).
# BUILD=0 / BINS=DIR: as bench-e2e.sh. PERF=1: also where the gateway's CPU goes during one
# more run of the most kwg laptops (perf samples of the gateway process; PERF_OUT=DIR keeps
# perf.data). Everything runs in the cluster's namespaces (prefix kl<pid>), removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SECONDS_PER_RUN:-5}
LAN_MODEL=${LAN_MODEL:-nic}
LAPTOPS=${LAPTOPS:-"1 4 16"}
MAX=$(tr ' ' '\n' <<<"$LAPTOPS" | sort -n | tail -1)
PORT0=5300   # laptop i's iperf3 server listens on PORT0 + i

ME=bench-gateway-load.sh
. scripts/lib/sim-gateway.sh
gw_deps "$([[ ${PERF:-0} == 1 ]] && echo perf)"
gw_bins

P=kl$(( $$ % 10000 ))
cleanup() {
  wggo_stop
  local i
  for ((i = 1; i <= ${#NS[@]}; i++)); do
    [[ -d $BINDIR/state-$i ]] && dev_in "${NS[i]}" "$BINDIR/state-$i" kwg leave >/dev/null 2>&1 || true
  done
  "$BINDIR/kwg-sim" --prefix "$P" down >/dev/null 2>&1 || true
  rm -rf "$BINDIR"
}
NS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
gw_cluster "$P" "$LAN_MODEL"

# The laptops: the cluster's own, then extra ones (kwg-sim laptop add); NS[i] is laptop i's.
NS[1]=$LAPTOP
for ((i = 2; i <= MAX; i++)); do
  NS[i]=$("$BINDIR/kwg-sim" --prefix "$P" laptop add "l$i" | cut -d' ' -f1)
done
# One iperf3 server per laptop in the iperf3 pod (a server runs one test at a time); they go
# with the pod's namespace.
IPERF_NS=$(gw_iperf_netns)
for ((i = 1; i <= MAX; i++)); do
  ip netns exec "$IPERF_NS" iperf3 -s -D -p $((PORT0 + i))
done

# Every laptop reaches its server within 20 s (the tunnel is up and its handshake done).
all_reachable() {
  local i
  for ((i = 1; i <= MAX; i++)); do reachable "${NS[i]}" "$POD_IP" $((PORT0 + i)); done
}

# Packets counted by interface $1 of the gateway's pod ($2: rx or tx).
GWNS=$(ip netns identify "$GWPID")
gw_packets() { ip -n "$GWNS" -j -s link show "$1" | jq ".[0].stats64.$2.packets"; }
# The gateway's TUN (the interface that is not eth0 or lo).
GWTUN=$(ip -n "$GWNS" -j link show | jq -r '[.[].ifname | select(. != "lo" and . != "eth0")][0]')

# Why the coalescing holds or not (the counters of each row):
# datagrams per receive call: the gateway's /metrics (kwg_gateway_udp_datagrams_received_total
# over kwg_gateway_udp_receive_calls_total): how many datagrams the socket held when it read;
gw_metric() {
  ip netns exec "$GWNS" curl -s --max-time 5 http://127.0.0.1:8080/metrics | awk -v m="$1" '$1 == m { print $2 }'
}
# datagrams dropped because the gateway's socket buffer was full (UDP and UDP6 RcvbufErrors of
# its pod's network namespace; the socket is dual-stack);
gw_rcvbuf_drops() {
  { awk '/^Udp:/ && n++ { print $6 }' "/proc/$GWPID/net/snmp"
    awk '$1 == "Udp6RcvbufErrors" { print $2 }' "/proc/$GWPID/net/snmp6"; } | awk '{ s += $1 } END { print s + 0 }'
}
# context switches of every thread of the gateway (voluntary and not: how often it slept and woke);
gw_ctxsw() { cat /proc/"$GWPID"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }

declare -A T G R C D X W S
# load CLIENT N: laptops 1..N upload at once; stores Gbit/s T, gateway CPU s/GB G, RSS MiB R,
# the frames arriving at the gateway's pod per packet it writes into its TUN C (how much
# its GRO coalesced the flows' segments), datagrams per receive call D, receive-buffer drops X,
# the gateway's context switches per MB W and the uploads' TCP retransmissions S under
# "CLIENT N" and prints the row.
load() {
  local client=$1 n=$2 i g0 g1 pids=() bytes failed f0 t0 c0 d0 x0 w0
  rm -f "$BINDIR"/iperf-*.json
  f0=$(gw_packets eth0 rx) t0=$(gw_packets "$GWTUN" rx)
  c0=$(gw_metric kwg_gateway_udp_receive_calls_total) d0=$(gw_metric kwg_gateway_udp_datagrams_received_total)
  x0=$(gw_rcvbuf_drops) w0=$(gw_ctxsw)
  g0=$(gateway_cpu)
  for ((i = 1; i <= n; i++)); do
    ip netns exec "${NS[i]}" iperf3 -c "$POD_IP" -p $((PORT0 + i)) -t "$DURATION" -J \
      >"$BINDIR/iperf-$i.json" 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  g1=$(gateway_cpu)
  C[$client $n]=$(ratio "$(($(gw_packets eth0 rx) - f0))" "$(($(gw_packets "$GWTUN" rx) - t0))")
  D[$client $n]=$(ratio "$(($(gw_metric kwg_gateway_udp_datagrams_received_total) - d0))" \
    "$(($(gw_metric kwg_gateway_udp_receive_calls_total) - c0))")
  X[$client $n]=$(($(gw_rcvbuf_drops) - x0))
  bytes=$(jq -s '[.[].end.sum_received.bytes // 0] | add' "$BINDIR"/iperf-*.json)
  W[$client $n]=$(ratio "$(($(gw_ctxsw) - w0))" "$((bytes / 1000000))")
  S[$client $n]=$(jq -s '[.[].end.sum_sent.retransmits // 0] | add' "$BINDIR"/iperf-*.json)
  failed=$(jq -s '[.[] | select(.error)] | length' "$BINDIR"/iperf-*.json)
  ((failed == 0)) || echo "$ME: $failed of $n iperf3 runs failed: $(jq -rs '[.[].error // empty][0]' "$BINDIR"/iperf-*.json)" >&2
  T[$client $n]=$(awk -v b="$bytes" -v d="$DURATION" 'BEGIN { printf "%.2f", b * 8 / 1e9 / d }')
  G[$client $n]=$(awk -v a="$g0" -v b="$g1" -v y="$bytes" 'BEGIN { if (y > 0) printf "%.2f", (b - a) / (y / 1e9); else print "-" }')
  R[$client $n]=$(gateway_rss)
  printf '%-14s %8s %10s Gbit/s %12s %10s MiB %10s %10s %10s %10s %10s\n' "$client" "$n" "${T[$client $n]}" \
    "${G[$client $n]}" "${R[$client $n]}" "${C[$client $n]}" "${D[$client $n]}" "${X[$client $n]}" \
    "${W[$client $n]}" "${S[$client $n]}"
}
# profile: perf samples of the gateway process during one more run of the most laptops; its
# top symbols (self time).
profile() {
  [[ ${PERF:-0} == 1 ]] || return 0
  local data=$BINDIR/perf-gateway-load.data
  perf record -q -g -F 997 -p "$GWPID" -o "$data" -- sleep "$DURATION" >/dev/null 2>&1 &
  local perf=$!
  load "kwg (perf)" "$MAX" >/dev/null
  wait "$perf" || true
  echo
  echo "kwg, $MAX laptops: where the gateway's CPU goes (perf, self time, top 25)"
  perf report -i "$data" --stdio --no-children --sort dso,sym 2>/dev/null | awk '/^ +[0-9.]+%/ && n++ < 25'
  echo "by thread"
  perf report -i "$data" --stdio --no-children --sort comm 2>/dev/null | awk '/^ +[0-9.]+%/ && n++ < 8'
  [[ -n ${PERF_OUT:-} ]] && cp "$data" "$PERF_OUT/"
  return 0
}

echo "iperf3 TCP upload, ${DURATION} s, laptop i -> pod $POD_IP:$((PORT0 + 1))+ through one gateway (cluster $P, LAN model $LAN_MODEL)"
printf '%-14s %8s %17s %12s %14s %10s %10s %10s %10s %10s\n' client laptops throughput "gw CPU s/GB" "gw RSS" \
  "gw GRO" "dgram/recv" "rcvbuf drop" "ctxsw/MB" "retransmit"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"

for ((i = 1; i <= MAX; i++)); do
  dev_in "${NS[i]}" "$BINDIR/state-$i" kwg join --name "load$i" --transport udp --dns-mode off \
    >"$BINDIR/join-$i.log" 2>&1 ||
    { echo "$ME: kwg join on ${NS[i]} failed:" >&2; cat "$BINDIR/join-$i.log" >&2; exit 1; }
done
all_reachable
for n in $LAPTOPS; do load kwg "$n"; done
PROFILE_OUT=$(profile)
for ((i = 1; i <= MAX; i++)); do
  dev_in "${NS[i]}" "$BINDIR/state-$i" kwg leave >/dev/null 2>&1
  rm -rf "$BINDIR/state-$i"
done

for ((i = 1; i <= MAX; i++)); do wggo_client "${NS[i]}" "wggo$i" "${P}w$i"; done
all_reachable
for n in $LAPTOPS; do load wireguard-go "$n"; done

MIN=$(tr ' ' '\n' <<<"$LAPTOPS" | sort -n | head -1)
echo
printf '%-44s %8s %14s\n' ratio kwg wireguard-go
printf '%-44s %8s %14s\n' "gateway CPU/GB, $MAX laptops / $MIN" \
  "$(ratio "${G[kwg $MAX]}" "${G[kwg $MIN]}")" "$(ratio "${G[wireguard-go $MAX]}" "${G[wireguard-go $MIN]}")"
printf '%-44s %8s %14s\n' "throughput, $MAX laptops / $MIN" \
  "$(ratio "${T[kwg $MAX]}" "${T[kwg $MIN]}")" "$(ratio "${T[wireguard-go $MAX]}" "${T[wireguard-go $MIN]}")"
for n in $LAPTOPS; do
  printf '%-44s %8s\n' "kwg / wireguard-go throughput, $n laptops" "$(ratio "${T[kwg $n]}" "${T[wireguard-go $n]}")"
done
[[ -n $PROFILE_OUT ]] && echo "$PROFILE_OUT"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit 0
