#!/usr/bin/env bash
# How long `kwg-sim up` takes on a warm build, against the 5 s target (issue 3). Run as root:
#   tests/sim/bench-up.sh [runs]
# Prints each run and the ratio of the mean to the target (below 1.0 is within target).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-5}"
cargo build -q -p kwg-sim
SIM="$PWD/target/debug/kwg-sim"
P="kb$$"
trap '"$SIM" down --prefix "$P" >/dev/null 2>&1 || true' EXIT
total=0
for i in $(seq "$RUNS"); do
  start=$(date +%s%N)
  "$SIM" up --prefix "$P" >/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  total=$((total + ms))
  echo "run $i: up in ${ms} ms"
done
"$SIM" down --prefix "$P"
mean=$((total / RUNS))
echo "mean ${mean} ms; ratio to the 5000 ms target: $(awk "BEGIN { printf \"%.2f\", $mean / 5000 }")"
