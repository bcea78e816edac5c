"""Reading unified diffs: which paths a patch touches, and whether any of them escapes its repository."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import unidiff

# Header lines that name a path, whether or not unidiff turns them into a file entry (renames, copies,
# binary diffs): an escape hidden in any of them must be caught.
_HEADER_PATH = re.compile(
    r"^(?:diff --git a/(?P<a>\S+) b/(?P<b>\S+)|(?:---|\+\+\+) (?P<f>\S+)|(?:rename|copy) (?:from|to) (?P<r>.+))$"
)


class UnsafePatchError(ValueError):
    """A patch that would write outside its repository or into .git; never applied."""


def patch_paths(patch: str) -> list[str]:
    """Every path a patch names, without the a/ b/ prefixes; /dev/null left out."""
    paths: list[str] = []
    for line in patch.splitlines():
        match = _HEADER_PATH.match(line)
        if not match:
            continue
        for group in ("a", "b", "f", "r"):
            value = match.group(group)
            if value is None or value == "/dev/null":
                continue
            if group == "f" and value[:2] in ("a/", "b/"):
                value = value[2:]
            paths.append(value.strip())
    return list(dict.fromkeys(paths))


def unsafe_reason(path: str) -> str | None:
    if not path:
        return "empty path"
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        return f"absolute path {path}"
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        return f"path {path} climbs out of the repository"
    if ".git" in parts:
        return f"path {path} is inside .git/"
    return None


def check_patch_safe(patch: str) -> None:
    """Raise UnsafePatchError naming the first path that escapes the repository."""
    for path in patch_paths(patch):
        reason = unsafe_reason(path)
        if reason:
            raise UnsafePatchError(reason)


def changed_files(patch: str) -> list[str]:
    """Target paths of a well-formed patch, via unidiff (the field's parser)."""
    parsed = unidiff.PatchSet(patch)
    return [f.path for f in parsed]
