#!/usr/bin/env bash
# Make a headless Chromium available for tests/test_report.py (which renders report.html).
# Prints the browser path on success; exits non-zero (with the reason on stderr) when it cannot.
set -euo pipefail

find_browser() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if find_browser; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "chromium is not installed and we are not root (cannot apt-get install it)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is not installed and apt-get is not available" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run instead of failing on its lock.
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
if ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends chromium >&2; then
    apt-get "${APT_OPTS[@]}" update >&2
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends chromium >&2
fi
find_browser || { echo "apt-get finished but no chromium binary was found on PATH" >&2; exit 1; }
