"""From a model's free-text reply to a patch grading will apply, or a clear reason why not.

Steps: pull the diff out (fenced or bare), drop prose between hunks, add missing a/ b/ prefixes, recount
hunk headers (models rarely count right; git refuses a wrong count), refuse paths that escape the repo and
patches over the size cap, then apply it in the worktree exactly as grading will (`workspace.patches.trial_apply`:
our refusal rules, the official fallbacks git apply, git apply --reject, patch --fuzz=5) and undo it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from swelab.diffs import UnsafePatchError, check_patch_safe
from swelab.workspace.patches import DEFAULT_MAX_PATCH_BYTES, size_refusal, trial_apply

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_INDEX = re.compile(r"^index [0-9a-f]+\.\.[0-9a-f]+( \d+)?$")
_HUNK_LOOSE = re.compile(r"^@@.*?@@(.*)$|^@@\s*$")
_HEADER_PREFIXES = (
    "diff --git ", "new file mode", "deleted file mode", "old mode", "new mode",
    "similarity index", "dissimilarity index", "rename from", "rename to", "copy from", "copy to",
    "Binary files",
)


@dataclass(frozen=True)
class ExtractedPatch:
    patch: str  # the repaired diff ("" when none could be found)
    ok: bool  # found, safe and applicable
    reason: str | None = None  # why not, in one line
    method: str | None = None  # which of grading's fallbacks applied it


def _looks_like_diff(text: str) -> bool:
    return bool(re.search(r"^(?:--- |diff --git )", text, re.M)) and "@@" in text


def extract_diff(reply: str | None) -> str | None:
    """The diff inside a reply: fenced ```diff blocks (all of them, in order) or the bare diff text."""
    if not reply:
        return None
    text = reply.replace("\r\n", "\n")
    blocks = [body for _lang, body in _FENCE.findall(text) if _looks_like_diff(body)]
    if blocks:
        return "\n".join(block.strip("\n") for block in blocks) + "\n"
    match = re.search(r"^(?:diff --git |--- )", text, re.M)
    if match and _looks_like_diff(text[match.start():]):
        return text[match.start():]
    return None


def _with_prefix(line: str, marker: str, prefix: str) -> str:
    path = line[len(marker):].split("\t")[0].strip()
    if path == "/dev/null" or path.startswith(prefix):
        return f"{marker}{path}"
    return f"{marker}{prefix}{path}"


def _locate(lines: list[str], block: list[str], start_hint: int) -> int | None:
    """1-based line where `block` (a hunk's old side) occurs in the file, nearest to the hint."""
    if not block:
        return None
    n = len(block)
    hits = [i for i in range(len(lines) - n + 1) if lines[i : i + n] == block]
    if not hits:
        return None
    return min(hits, key=lambda i: abs(i + 1 - start_hint)) + 1


def _pad_context(body: list[str], lines: list[str], start: int, pad: int = 3) -> tuple[list[str], int]:
    """git apply pins a hunk with no trailing context to the file's end (and one at line 1 with no
    leading context to its start); a located hunk gets real context lines from the file instead."""
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the empty string after the final newline is not a line
    core = [h for h in body if not h.startswith("\\")]
    if not core or any(h.startswith("\\") for h in body):
        return body, start  # "no newline at end of file" hunks sit at the end already
    n_old = sum(1 for h in core if h[:1] in (" ", "-"))
    if core[-1][:1] != " ":
        after = lines[start - 1 + n_old : start - 1 + n_old + pad]
        body = body + [" " + line for line in after]
    if core[0][:1] != " " and start > 1:
        before = lines[max(0, start - 1 - pad) : start - 1]
        body = [" " + line for line in before] + body
        start -= len(before)
    return body, start


def clean_diff(diff: str, root: Path | None = None, keep_trailing_blanks: bool = False) -> str:
    """Keep only diff lines, add a/ b/ prefixes, and recount every hunk header from its body. With
    `root` (the worktree), a hunk header without line numbers gets them by finding its old lines."""
    out: list[str] = []
    hunk: list[str] | None = None
    header: tuple[int | None, str] | None = None
    new_file = False
    target: str | None = None
    file_lines: dict[str, list[str] | None] = {}
    shift = 0  # lines added minus removed by the earlier hunks of the current file
    blank = "\x00"  # marks an empty line that we turned into context; may be a separator instead

    def old_side(body: list[str]) -> list[str]:
        return [h[1:] for h in body if h[:1] in (" ", "-")]

    def read(path: str | None) -> list[str] | None:
        if root is None or path is None:
            return None
        if path not in file_lines:
            try:
                file_lines[path] = (root / path).read_text(encoding="utf-8", errors="replace").split("\n")
            except OSError:
                file_lines[path] = None
        return file_lines[path]

    def flush() -> None:
        nonlocal hunk, header, shift
        if hunk is None or header is None:
            return
        if not keep_trailing_blanks:
            while hunk and hunk[-1] == blank:
                hunk.pop()
        body = [" " if h == blank else h for h in hunk]
        start, tail = header
        if new_file:
            start = 0
        elif start is None or root is not None and start > 0:
            lines = read(target)
            found = _locate(lines, old_side(body), start or 1) if lines is not None else None
            if found is not None and lines is not None:
                body, found = _pad_context(body, lines, found)
            start = found or start or 2  # 1 would pin the hunk to the file's start in git apply
        old = sum(1 for h in body if h[:1] in (" ", "-"))
        new = sum(1 for h in body if h[:1] in (" ", "+"))
        new_start = start + (1 if new_file else shift)
        shift += new - old
        out.append(f"@@ -{start},{old} +{new_start if new else 0},{new} @@{tail}")
        out.extend(body)
        hunk, header = None, None

    raw_lines = diff.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(raw_lines):
        following = raw_lines[index + 1] if index + 1 < len(raw_lines) else ""
        if line.startswith("--- ") and (hunk is None or following.startswith("+++ ")):
            flush()
            path = line[4:].split("\t")[0].strip()
            new_file = path == "/dev/null"
            shift = 0
            out.append(_with_prefix(line, "--- ", "a/"))
            continue
        if line.startswith("+++ ") and hunk is None:
            path = line[4:].split("\t")[0].strip()
            target = path[2:] if path.startswith("b/") else path
            out.append(_with_prefix(line, "+++ ", "b/"))
            continue
        if line.startswith(_HEADER_PREFIXES) or _INDEX.match(line):
            flush()
            out.append(line)
            continue
        match = _HUNK.match(line)
        loose = None if match else _HUNK_LOOSE.match(line)
        if match or loose:
            flush()
            if match:
                header = (int(match.group(1)), match.group(5))
            else:  # '@@ ... @@' without numbers: located in flush()
                header = (None, (loose.group(1) or "") if loose else "")
            hunk = []
            continue
        if hunk is not None:
            if line[:1] in (" ", "+", "-", "\\"):
                hunk.append(line)  # "\\ No newline at end of file" included
            elif line == "":
                hunk.append(blank)
            else:
                flush()  # prose after the hunk ends it
        # lines outside any file/hunk (prose) are dropped
    flush()
    text = "\n".join(out).strip("\n")
    return text + "\n" if text else ""


def _hunks_and_files(diff: str) -> tuple[int, int]:
    return diff.count("\n@@ ") + diff.startswith("@@ "), len(re.findall(r"^\+\+\+ ", diff, re.M))


def dry_run(worktree: Path, patch: str, row: dict | None = None) -> tuple[bool, str, str | None]:
    """Would grading apply this? (applied, log or refusal, method). Applied for real in `worktree` (a clean
    checkout at the base commit: the patch agent's, which nothing else changes) with grading's own rules for
    instance `row`, then undone: `patch --fuzz --dry-run` alone accepts a diff that writes through a symlink it
    creates, which the real apply refuses."""
    result = trial_apply(worktree, row or {}, patch)
    if result.refused:
        return False, f"refused: {result.refused}", None
    return result.applied, result.log, result.method


def prepare_patch(
    reply: str | None,
    worktree: Path | None,
    check: Callable[[Path, str], tuple[bool, str, str | None]] | None = None,
    *,
    row: dict | None = None,
    max_bytes: int = DEFAULT_MAX_PATCH_BYTES,
) -> ExtractedPatch:
    """Reply text -> ExtractedPatch; `ok` False means the reply is malformed (a run failure). `row` is the
    instance (its test files are what grading refuses a patch for); `check` defaults to `dry_run` for it."""
    raw = extract_diff(reply)
    if raw is None:
        return ExtractedPatch("", False, "no unified diff found in the reply")
    patch = clean_diff(raw, worktree)
    hunks, files = _hunks_and_files(patch)
    if not patch or hunks == 0 or files == 0:
        return ExtractedPatch(patch, False, "the diff has no file header or no hunk")
    too_big = size_refusal(patch, max_bytes)
    if too_big:
        return ExtractedPatch("", False, too_big)  # not kept: the reply in the trajectory is its one copy
    try:
        check_patch_safe(patch)
    except UnsafePatchError as exc:
        return ExtractedPatch(patch, False, f"refused: {exc}")
    if worktree is None:
        return ExtractedPatch(patch, True, None, None)
    check = check or partial(dry_run, row=row)
    ok, message, method = check(worktree, patch)
    if not ok and message.startswith("refused"):
        return ExtractedPatch(patch, False, message)  # refused by rule: no variant would change that
    if not ok:  # the blank lines we dropped may have been real empty context lines after all
        variant = clean_diff(raw, worktree, keep_trailing_blanks=True)
        if variant != patch:
            ok2, _message2, method2 = check(worktree, variant)
            if ok2:
                return ExtractedPatch(variant, True, None, method2)
    if not ok:
        first = " ".join(message.split())[:300]
        return ExtractedPatch(patch, False, f"does not apply: {first}")
    return ExtractedPatch(patch, True, None, method)
