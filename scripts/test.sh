#!/usr/bin/env bash
# Runs every kwg test: unit, property, API server (with the real kubectl), network-namespace
# WireGuard tests and the one-machine-cluster end-to-end tests.
# Run as root on a fresh Debian machine; it installs the system packages it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests build network namespaces" >&2
  exit 1
fi

bash scripts/install-deps.sh

echo "== build"
cargo build --workspace --bins --locked
export KWG_BIN_DIR="$PWD/target/debug"

echo "== test"
cargo test --workspace --locked --no-fail-fast

# Rekey and session expiry on boringtun's mock clock: a crate outside the workspace, so the
# `mock-instant` feature does not freeze Tunn's clock in the workspace's binaries.
echo "== test: WireGuard timers (wg/timer-tests)"
CARGO_TARGET_DIR="$PWD/target/timer-tests" \
  cargo test --locked --manifest-path wg/timer-tests/Cargo.toml

# The model test again with boringtun's own timers (keepalive, rekey, handshake retransmission,
# session expiry) on the model's fake clock: feature `timers` turns on boringtun's
# `mock-instant`, so it builds in a target directory of its own (feature unification must not
# freeze Tunn's clock in the workspace's binaries; never --all-features).
echo "== test: model with boringtun's timers (tests/model --features timers)"
CARGO_TARGET_DIR="$PWD/target/model-timers" \
  cargo test --locked -p kwg-model --features timers
