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
# `mock-instant` (never --all-features). Features are unified per cargo invocation, so this run
# builds its own copies of boringtun and the crates above it (a different feature set, a
# different artifact) and leaves the workspace's binaries, built above, untouched; the shared
# target directory reuses everything else (tokio, kube, hickory...).
echo "== test: model with boringtun's timers (tests/model --features timers)"
cargo test --locked -p kwg-model --features timers
