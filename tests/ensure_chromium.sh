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

find_browser && exit 0
bash "$(dirname "$0")/apt_install.sh" chromium
find_browser || { echo "no chromium binary on PATH after installing 'chromium'" >&2; exit 1; }
