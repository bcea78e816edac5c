"""Patch safety: any path a diff names — file headers, renames, copies — must stay inside the repository."""

from __future__ import annotations

import pytest

from swelab.diffs import UnsafePatchError, changed_files, check_patch_safe, patch_paths

GOOD = "diff --git a/pkg/m.py b/pkg/m.py\n--- a/pkg/m.py\n+++ b/pkg/m.py\n@@ -1 +1 @@\n-a\n+b\n"


def test_a_normal_patch_is_safe_and_its_paths_are_read():
    check_patch_safe(GOOD)
    assert patch_paths(GOOD) == ["pkg/m.py"] and changed_files(GOOD) == ["pkg/m.py"]


@pytest.mark.parametrize(
    "patch, reason",
    [
        ("diff --git a/x b/x\nsimilarity index 100%\nrename from x\nrename to ../../etc/cron.d/x\n", "climbs out"),
        ("diff --git a/x b/x\ncopy from x\ncopy to .git/hooks/pre-commit\n", "inside .git"),
        ("--- a/pkg/m.py\n+++ /root/.bashrc\n@@ -1 +1 @@\n-a\n+b\n", "absolute path"),
        ("--- a/pkg/m.py\n+++ b/pkg/sub/../../../up.py\n@@ -1 +1 @@\n-a\n+b\n", "climbs out"),
    ],
)
def test_escapes_hidden_in_any_header_are_refused(patch, reason):
    with pytest.raises(UnsafePatchError, match=reason):
        check_patch_safe(patch)
