#!/usr/bin/env bash
# Installs the Debian packages kwg's tests, demo and benchmarks use, when they are missing.
# Safe to run again: it installs nothing when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip           || need+=(iproute2)
have nft          || need+=(nftables)
have dig          || need+=(dnsutils)
have wg           || need+=(wireguard-tools)
have wireguard-go || need+=(wireguard-go)
have iperf3       || need+=(iperf3)
# bench-e2e.sh models a node NIC that coalesces forwarded UDP.
have ethtool      || need+=(ethtool)
have curl         || need+=(curl)
have unshare      || need+=(util-linux)
have ping         || need+=(iputils-ping)
have pgrep        || need+=(procps)
have cc           || need+=(gcc)
have kubectl      || need+=(kubernetes-client)
# The real systemd-resolved of tests/sim (kwg_sim::resolved) runs on a dbus-daemon of the test's.
have dbus-daemon  || need+=(dbus-daemon)
have dbus-send    || need+=(dbus-bin)
have nsenter      || need+=(util-linux)
have setpriv      || need+=(util-linux)
# e2e privilege: the real sudo (its configuration is the test's, in a private mount namespace),
# and systemd-socket-activate + systemd-analyze for kwg-helper's units (nothing is started:
# systemd is not PID 1 here).
have sudo         || need+=(sudo)
have systemd-socket-activate || need+=(systemd)
# Listeners inside pods in the reach and gateway e2e tests; doctor's bundle is unpacked with tar.
have python3      || need+=(python3)
have tar          || need+=(tar)
# The GitHub action's steps (ci/action/*.js) are run as a runner would, with node.
have node         || need+=(nodejs)
# The release tests: pip for the workflow and Dockerfile checkers, man for the man pages,
# dpkg-deb for the .deb (scripts/install-release-tools.sh installs the rest into a cache).
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
have man          || need+=(man-db)
have dpkg-deb     || need+=(dpkg)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# systemd-resolved itself is never installed (it would take over this machine's resolv.conf):
# tests `apt-get download` it into /var/cache/kwg-test, so apt must know the package.
if ! apt-cache show systemd-resolved >/dev/null 2>&1; then
  echo "install-deps: apt-get update (tests download systemd-resolved without installing it)"
  apt-get update -qq
fi

have cargo || { echo "install-deps: cargo is missing: install a Rust toolchain (rustup) first" >&2; exit 1; }

# check-jsonschema, hadolint and cargo-deb for the release tests, into /var/cache/kwg-test/tools.
bash "$(dirname "$0")/install-release-tools.sh" >/dev/null
