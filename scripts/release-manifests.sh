#!/usr/bin/env bash
# Writes the manifests of a release: manifests/ with the gateway image pinned by version
# (kustomize `images:`), as OUT/kwg-manifests_VERSION.tar.gz (top directory kwg-manifests).
# `kubectl apply -k kwg-manifests/` then runs IMAGE:VERSION instead of kwg-gateway:dev.
# Usage: scripts/release-manifests.sh VERSION IMAGE OUT   (IMAGE e.g. ghcr.io/OWNER/kwg-gateway)
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: release-manifests.sh VERSION IMAGE OUT}
image=${2:?usage: release-manifests.sh VERSION IMAGE OUT}
out=${3:?usage: release-manifests.sh VERSION IMAGE OUT}
case "$image" in *:*) echo "release-manifests: IMAGE without a tag (the tag is VERSION): $image" >&2; exit 2 ;; esac
if grep -q '^images:' manifests/kustomization.yaml; then
  echo "release-manifests: manifests/kustomization.yaml already has images:" >&2
  exit 2
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r manifests "$stage/kwg-manifests"
cat >>"$stage/kwg-manifests/kustomization.yaml" <<YAML
# Release $version: the gateway image of this release, pinned by version.
images:
  - name: kwg-gateway
    newName: $image
    newTag: "$version"
YAML
mkdir -p "$out"
tar -C "$stage" --owner=0 --group=0 -czf "$out/kwg-manifests_$version.tar.gz" kwg-manifests
echo "release-manifests: $out/kwg-manifests_$version.tar.gz ($image:$version)"
