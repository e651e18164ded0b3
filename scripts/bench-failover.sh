#!/usr/bin/env bash
# Failover figures of the gateway: the longest gap without a successful HTTP request (one
# every 100 ms through a laptop joined with kwg) when the pod holding the session is deleted
# and during `kubectl rollout restart`, over ROUNDS rounds (default 5) each, with 1 and with
# 2 replicas; prints min, median and max. Runs tests/e2e/tests/ha.rs (as root: it builds a
# one-machine cluster per round). Usage: scripts/bench-failover.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
cargo build -p kwg-gateway -p kwg -p kwg-sim -p kwg-wg -p kwg-apiserver >/dev/null
cargo test -p kwg-e2e --test ha --no-run >/dev/null 2>&1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for replicas in 1 2; do
  : >"$out"
  for ((i = 1; i <= rounds; i++)); do
    KWG_HA_REPLICAS=$replicas cargo test -q -p kwg-e2e --test ha a_laptop_keeps_working -- --nocapture 2>&1 \
      | grep -E 'longest gap' >>"$out" || echo "round $i with $replicas replica(s) failed" >&2
  done
  for what in "failover" "rolling restart"; do
    grep "^$what" "$out" | sed -E 's/.*longest gap ([0-9.]+) s.*/\1/' | sort -n | awk -v r="$replicas" -v w="$what" '
      { v[NR] = $1 }
      END {
        if (NR == 0) { printf "%d replica(s), %-16s no figures\n", r, w; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%d replica(s), %-16s gap min %.2f s  median %.2f s  max %.2f s  (%d rounds)\n", r, w, v[1], m, v[NR], NR
      }'
  done
done
