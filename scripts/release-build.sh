#!/usr/bin/env bash
# Builds the release assets of one architecture into OUT (the release workflow runs it on an
# amd64 and an arm64 runner; tests run it with BIN_DIR=target/debug to package what is built):
#   kwg_VERSION_linux_ARCH.tar.gz   kwg, kwg-helper (the root helper of a join by a normal user),
#                                   kwg's man pages and bash/zsh/fish completions
#   kwg_VERSION-1_ARCH.deb          the same as a Debian package (cargo-deb, metadata in cli/Cargo.toml)
#   linux-ARCH/kwg-gateway          the gateway binary gateway/Dockerfile copies into the image
#   SHA256SUMS                      sha256sum of the archives and packages above
# Usage: scripts/release-build.sh VERSION ARCH OUT [BIN_DIR]
# Without BIN_DIR it runs `cargo build --release --locked` first. cargo-deb must be on PATH.
# KWG_RELEASE_FAST=1: faster compression of the .deb (tests).
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: release-build.sh VERSION ARCH OUT [BIN_DIR]}
arch=${2:?usage: release-build.sh VERSION ARCH OUT [BIN_DIR]}
out=${3:?usage: release-build.sh VERSION ARCH OUT [BIN_DIR]}
bin=${4:-}
case "$arch" in amd64 | arm64) ;; *) echo "release-build: ARCH is amd64 or arm64, not $arch" >&2; exit 2 ;; esac
workspace=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
if [ "$version" != "$workspace" ]; then
  echo "release-build: version $version is not the workspace version $workspace (Cargo.toml [workspace.package])" >&2
  exit 2
fi

if [ -z "$bin" ]; then
  cargo build --release --locked -p kwg -p kwg-gateway -p kwg-privhelper
  bin=target/release
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# cargo-deb reads target/release of a target directory of our own (so a debug build packages
# the same way, and the shared target/ is not written): the binary, and the man pages and
# completions made from its own clap definitions (cli/Cargo.toml names them).
release="$stage/target/release"
assets="$release/kwg-assets"
mkdir -p "$assets/man" "$assets/completions"
cp "$bin/kwg" "$bin/kwg-helper" "$release/"
"$release/kwg" man --dir "$assets/man"
gzip -9n "$assets"/man/*.1
"$release/kwg" completion bash >"$assets/completions/kwg.bash"
"$release/kwg" completion zsh >"$assets/completions/_kwg"
"$release/kwg" completion fish >"$assets/completions/kwg.fish"

name="kwg_${version}_linux_${arch}"
mkdir -p "$stage/$name"
cp "$release/kwg" "$release/kwg-helper" README.md "$stage/$name/"
cp -r "$assets/man" "$assets/completions" "$stage/$name/"
tar -C "$stage" --owner=0 --group=0 -czf "$out/$name.tar.gz" "$name"

# KWG_RELEASE_FAST=1 (the tests): faster, larger compression of the .deb.
fast=()
[ "${KWG_RELEASE_FAST:-}" = 1 ] && fast=(--fast)
CARGO_TARGET_DIR="$stage/target" cargo deb -p kwg --no-build --no-strip "${fast[@]}" \
  --deb-version "$version-1" -o "$out/"

mkdir -p "$out/linux-$arch"
cp "$bin/kwg-gateway" "$out/linux-$arch/kwg-gateway"

(cd "$out" && sha256sum -- kwg_*.tar.gz kwg_*.deb >SHA256SUMS)
echo "release-build: $(cd "$out" && ls kwg_*)"
