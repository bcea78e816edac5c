#!/usr/bin/env bash
# Make bubblewrap (`bwrap`, Debian package `bubblewrap`) available for the shell-mode sandbox.
# Prints the bwrap path on success; exits non-zero (with the reason on stderr) when it cannot.
set -euo pipefail

if ! command -v bwrap >/dev/null 2>&1; then
    bash "$(dirname "$0")/apt_install.sh" bubblewrap
fi
command -v bwrap || { echo "no bwrap binary on PATH after installing 'bubblewrap'" >&2; exit 1; }
