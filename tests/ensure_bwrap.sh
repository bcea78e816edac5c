#!/usr/bin/env bash
# Make bubblewrap (`bwrap`, Debian package `bubblewrap`) available for the shell-mode sandbox.
# Prints the bwrap path on success; exits non-zero (with the reason on stderr) when it cannot.
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    command -v bwrap
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "bwrap is not installed and we are not root: install the Debian package 'bubblewrap'" \
         "(sudo apt-get install bubblewrap)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bwrap is not installed and apt-get is not available: install the 'bubblewrap' package" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run instead of failing on its lock.
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
if ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends bubblewrap >&2; then
    apt-get "${APT_OPTS[@]}" update >&2
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends bubblewrap >&2
fi
command -v bwrap || { echo "apt-get finished but no bwrap binary was found on PATH" >&2; exit 1; }
