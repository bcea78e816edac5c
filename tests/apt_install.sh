#!/usr/bin/env bash
# Install Debian packages when we are root and apt-get exists; otherwise say why on stderr and fail.
# Usage: tests/apt_install.sh PACKAGE...   (what tests/ensure_*.sh call when a tool is missing)
set -euo pipefail

if [ "$(id -u)" != "0" ]; then
    echo "not root, cannot install the Debian package(s) $*: sudo apt-get install $*" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get is not available: install the package(s) $* by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run instead of failing on its lock.
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
if ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$@" >&2; then
    apt-get "${APT_OPTS[@]}" update >&2
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$@" >&2
fi
