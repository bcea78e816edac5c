"""The audited toolbelt of shell mode, and the model patch taken from a worktree.

Every tool works inside one worktree. Paths are resolved (symlinks followed) and refused when they leave
the worktree or touch `.git`; commands (bash, search, run_python, run_tests) run in the bubblewrap
sandbox; file reads and writes happen on the host, after the path check, and writes are atomic. A bad
tool call (unknown tool, arguments that are not JSON, a missing field) becomes an error string for the
model: it never raises out of `Toolbelt.call`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import unidiff

from swelab.diffs import UnsafePatchError, check_patch_safe, patch_paths
from swelab.io import atomic_write_text
from swelab.sandbox import cap_text, run_sandboxed
from swelab.workspace.errors import WorkspaceError
from swelab.workspace.patches import DEFAULT_MAX_PATCH_BYTES, clean_checkout, path_refusal, size_refusal, trial_apply

SUBMIT_SENTINEL = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"  # mini-swe-agent's convention, for text mode
# Untracked files that are never part of a model patch: caches and build litter, and the patch file that
# mini-swe-agent's prompt asks the model to write.
_JUNK_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".eggs", "node_modules",
               ".venv", "venv"}
_JUNK_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".egg-info")
_MAX_LIST_ENTRIES = 1000


class ToolError(Exception):
    """A tool call the model got wrong: the message goes back to the model."""


@dataclass
class ToolResult:
    output: str  # exactly what the model is shown
    exit_code: int | None = 0
    duration_s: float = 0.0
    error: bool = False  # the call itself was refused or malformed
    timed_out: bool = False
    submitted: bool = False


# -- paths ------------------------------------------------------------------------------------------
def resolve_in_worktree(worktree: Path, path: Any) -> Path:
    """The real path of `path` (relative to the worktree, or absolute inside it); ToolError otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("path must be a non-empty string")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte")
    root = Path(worktree).resolve()
    given = Path(path.strip())
    if ".git" in given.parts:
        raise ToolError(f"path {path!r} touches .git, which tools may not read or change")
    candidate = given if given.is_absolute() else root / given
    resolved = candidate.resolve(strict=False)  # follows every symlink that exists
    if resolved != root and root not in resolved.parents:
        raise ToolError(f"path {path!r} is outside the repository (resolves to {resolved})")
    if ".git" in resolved.relative_to(root).parts:
        raise ToolError(f"path {path!r} touches .git, which tools may not read or change")
    return resolved


def _relative(worktree: Path, path: Path) -> str:
    rel = path.relative_to(Path(worktree).resolve()).as_posix()
    return rel or "."


# -- host-side git ----------------------------------------------------------------------------------
def _git_env() -> dict[str, str]:
    """git on the host reads nothing of ours: no system/global config, no pager, no secrets."""
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL") if key in os.environ}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0",
               GIT_PAGER="cat", HOME=tempfile.gettempdir())
    return env


def host_git(
    worktree: Path, *args: str, input: str | None = None, env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    # fsmonitor and hooks would run programs named by config: never on content the model touched.
    cmd = ["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "core.quotepath=off",
           *args]
    result = subprocess.run(cmd, cwd=worktree, input=input, capture_output=True, text=True,
                            env={**_git_env(), **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {worktree}: {result.stderr.strip()[:500]}")
    return result


def paths_of_test_patch(test_patch: str | None) -> set[str]:
    """Every path the task's test patch touches (source and target), parsed with unidiff."""
    if not test_patch or not test_patch.strip():
        return set()
    paths: set[str] = set()
    try:
        for patched in unidiff.PatchSet(test_patch):
            for name in (patched.source_file, patched.target_file):
                if name and name != "/dev/null":
                    paths.add(name[2:] if name[:2] in ("a/", "b/") else name)
            paths.add(patched.path)
    except unidiff.UnidiffParseError:
        pass
    paths.update(patch_paths(test_patch))  # headers unidiff may not surface (pure renames, binary)
    return paths


def _is_junk(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return any(part in _JUNK_PARTS or part.endswith(".egg-info") for part in parts) or rel.endswith(
        _JUNK_SUFFIXES
    )


def _is_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"\x00" in handle.read(8192)
    except OSError:
        return True


def changed_paths(worktree: Path, base_commit: str) -> tuple[list[str], list[str]]:
    """(text paths changed since base_commit, paths left out: binary files and symlinks). Untracked new
    files are added with intent-to-add first, so `git diff <base>` shows them as new files."""
    untracked = host_git(worktree, "ls-files", "--others", "--exclude-standard", "-z").stdout.split("\0")
    new_files = [p for p in untracked if p and not _is_junk(p) and not (Path(worktree) / p).is_symlink()
                 and not _is_binary(Path(worktree) / p)]
    if new_files:
        host_git(worktree, "add", "--intent-to-add", "--", *new_files)
    numstat = host_git(worktree, "diff", "--numstat", "-z", "--no-renames", base_commit).stdout
    text, binary = [], []
    for record in numstat.split("\0"):
        if not record.strip():
            continue
        added, removed, path = record.split("\t", 2)
        if _is_junk(path):
            continue
        # A symlink in a patch could point the evaluator's later writes outside the repository.
        left_out = (added == "-" and removed == "-") or (Path(worktree) / path).is_symlink()
        (binary if left_out else text).append(path)
    return text, binary


def graded_away(path: str) -> bool:
    """A path grading refuses any model patch for (a test file, conftest.py, a pytest plugin or .pth file,
    `workspace.patches.path_refusal`): left out of a worktree diff, so that a model's scratch test_*.py does
    not sink its whole fix."""
    return path_refusal(path) is not None


def extract_patch(worktree: Path, base_commit: str, exclude: set[str] | frozenset[str] = frozenset()) -> str:
    """`git diff <base_commit>` of the worktree (new files included), without the `exclude` paths (the task's
    test files), the paths grading refuses (`graded_away`), binary files and cache litter."""
    text_paths, _ = changed_paths(worktree, base_commit)
    keep = [p for p in text_paths if p not in exclude and not graded_away(p)]
    if not keep:
        return ""
    diff = host_git(worktree, "diff", "--no-color", "--no-ext-diff", "--no-renames", "--full-index",
                    base_commit, "--", *keep).stdout
    return diff


def validate_patch(worktree: Path, base_commit: str, patch: str, instance: dict | None = None,
                   max_bytes: int = DEFAULT_MAX_PATCH_BYTES) -> str | None:
    """None when grading will apply the patch; else the reason. The rules are grading's own
    (`workspace.patches.trial_apply`: size cap, safe paths, `patch_refusal` for `instance`, the official
    fallbacks applied for real, `pytest_config_change`), tried in a scratch checkout of base_commit, so the
    worktree (and whatever the model left in it) plays no part."""
    if not patch.strip():
        return None
    too_big = size_refusal(patch, max_bytes)
    if too_big:
        return too_big
    try:
        check_patch_safe(patch)
        unidiff.PatchSet(patch)
    except UnsafePatchError as exc:
        return f"unsafe patch: {exc}"
    except unidiff.UnidiffParseError as exc:
        return f"unparseable patch: {exc}"
    try:
        with clean_checkout(worktree, base_commit) as clean:
            result = trial_apply(clean, instance or {}, patch)
    except (WorkspaceError, OSError) as exc:  # no clean tree to try it in: unusable, and say why
        return f"could not check the patch against {base_commit[:12]}: {' '.join(str(exc).split())[:300]}"
    if result.refused:
        return f"refused: {result.refused}"
    if not result.applied:
        return f"patch does not apply to {base_commit[:12]}: {' '.join(result.log.split())[:300]}"
    return None


# -- schemas ----------------------------------------------------------------------------------------
def _tool(name: str, description: str, properties: dict, required: Sequence[str] = ()) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(required)},
        },
    }


_STR = {"type": "string"}
TOOL_SCHEMAS: dict[str, dict] = {
    "bash": _tool(
        "bash",
        "Run a bash command in the repository root, in a sandbox with no network. Each call is a new shell.",
        {"command": {**_STR, "description": "the bash command"}},
        ["command"],
    ),
    "read_file": _tool(
        "read_file",
        "Read a text file of the repository, with line numbers. Optionally only lines start_line..end_line.",
        {
            "path": {**_STR, "description": "path relative to the repository root"},
            "start_line": {"type": "integer", "description": "first line (1-based), default 1"},
            "end_line": {"type": "integer", "description": "last line (inclusive), default the end"},
        },
        ["path"],
    ),
    "write_file": _tool(
        "write_file",
        "Create or overwrite a file of the repository with the given content.",
        {"path": _STR, "content": {**_STR, "description": "the whole new content of the file"}},
        ["path", "content"],
    ),
    "str_replace": _tool(
        "str_replace",
        "Edit a file: replace old_str, which must occur exactly once in the file, with new_str.",
        {
            "path": _STR,
            "old_str": {**_STR, "description": "exact text to replace, with enough context to be unique"},
            "new_str": {**_STR, "description": "replacement text"},
        },
        ["path", "old_str", "new_str"],
    ),
    "search": _tool(
        "search",
        "Search the repository (grep -rn, extended regex). Returns file:line:text.",
        {
            "pattern": {**_STR, "description": "extended regular expression"},
            "path": {**_STR, "description": "file or folder to search, default the whole repository"},
        },
        ["pattern"],
    ),
    "list_dir": _tool(
        "list_dir",
        "List a folder of the repository (folders end with /).",
        {"path": {**_STR, "description": "default the repository root"},
         "depth": {"type": "integer", "description": "levels to descend, 1 to 3, default 1"}},
    ),
    "run_python": _tool(
        "run_python",
        "Run a short Python snippet in the repository root (sandboxed, no network) and show its output.",
        {"code": {**_STR, "description": "Python source"}},
        ["code"],
    ),
    "run_tests": _tool(
        "run_tests",
        "Run pytest in the repository: python -m pytest [-k EXPR] [paths].",
        {
            "k": {**_STR, "description": "pytest -k expression (optional)"},
            "paths": {"type": "array", "items": _STR, "description": "test files or node ids (optional)"},
        },
    ),
    "git_diff": _tool("git_diff", "Show the changes made so far, as they would be submitted.", {}),
    "submit": _tool(
        "submit",
        "Finish: submit the current changes of the repository as the fix. Call once, when done.",
        {"summary": {**_STR, "description": "one sentence on what was changed (optional)"}},
    ),
}
DEFAULT_TOOLS = tuple(TOOL_SCHEMAS)


# -- the toolbelt ------------------------------------------------------------------------------------
class Toolbelt:
    """The tools of one attempt, bound to one worktree."""

    def __init__(
        self,
        worktree: Path,
        *,
        base_commit: str | None = None,
        exclude_from_patch: set[str] | frozenset[str] = frozenset(),
        command_timeout_s: float = 25.0,
        max_output_bytes: int = 10000,
        env: Mapping[str, str] | None = None,
        ro_paths: Sequence[Path] = (),
        python: str = "python",
        tools: Sequence[str] = DEFAULT_TOOLS,
    ):
        unknown = [name for name in tools if name not in TOOL_SCHEMAS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(TOOL_SCHEMAS)}")
        self.worktree = Path(worktree).resolve()
        self.base_commit = base_commit
        self.exclude_from_patch = frozenset(exclude_from_patch)
        self.command_timeout_s = float(command_timeout_s)
        self.max_output_bytes = int(max_output_bytes)
        self.env = dict(env or {})
        self.ro_paths = list(ro_paths)
        self.python = python
        self.tools = tuple(tools)
        self.submitted = False
        self._handlers: dict[str, Callable[..., ToolResult]] = {
            "bash": self.bash,
            "read_file": self.read_file,
            "write_file": self.write_file,
            "str_replace": self.str_replace,
            "search": self.search,
            "list_dir": self.list_dir,
            "run_python": self.run_python,
            "run_tests": self.run_tests,
            "git_diff": self.git_diff,
            "submit": self.submit,
        }

    def schemas(self) -> list[dict]:
        return [TOOL_SCHEMAS[name] for name in self.tools]

    # -- dispatch ---------------------------------------------------------------------------------
    def call(self, name: Any, arguments: Any, *, timeout_s: float | None = None) -> ToolResult:
        """Run one tool call from the model. Never raises for the model's mistakes."""
        started = time.monotonic()
        try:
            if name not in self.tools:
                raise ToolError(f"unknown tool {name!r}; available tools: {', '.join(self.tools)}")
            args = self._parse_arguments(arguments)
            handler = self._handlers[name]
            try:
                result = handler(**args, timeout_s=timeout_s) if name in _TIMED else handler(**args)
            except TypeError as exc:  # missing or unexpected fields
                raise ToolError(f"bad arguments for {name}: {_describe_type_error(exc)}") from exc
        except ToolError as exc:
            result = ToolResult(output=f"Error: {exc}", exit_code=None, error=True)
        except (OSError, ValueError, RuntimeError) as exc:
            result = ToolResult(output=f"Error: {type(exc).__name__}: {exc}", exit_code=None, error=True)
        if not result.duration_s:
            result.duration_s = round(time.monotonic() - started, 3)
        return result

    @staticmethod
    def _parse_arguments(arguments: Any) -> dict:
        if arguments is None or arguments == "":
            return {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ToolError(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from exc
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object")
        return {str(key): value for key, value in arguments.items()}

    def _timeout(self, timeout_s: float | None) -> float:
        return self.command_timeout_s if timeout_s is None else max(0.1, min(self.command_timeout_s, timeout_s))

    def _sandbox(self, cmd: Sequence[str] | str, timeout_s: float | None) -> ToolResult:
        result = run_sandboxed(cmd, self.worktree, self._timeout(timeout_s), self.max_output_bytes,
                               self.env, ro_paths=self.ro_paths)
        output = result.output
        if result.timed_out:
            output += f"\n[command killed: it ran past the {self._timeout(timeout_s):g} s limit]"
        elif result.exit_code:
            output += f"\n[exit code {result.exit_code}]"
        return ToolResult(output=output, exit_code=result.exit_code, duration_s=result.duration_s,
                          timed_out=result.timed_out)

    # -- tools --------------------------------------------------------------------------------------
    def bash(self, command: str, timeout_s: float | None = None) -> ToolResult:
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string")
        result = self._sandbox(command, timeout_s)
        first = result.output.lstrip().splitlines()[:1]
        if first and first[0].strip() == SUBMIT_SENTINEL and result.exit_code == 0:
            self.submitted = True
            result.submitted = True
        return result

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolResult:
        target = resolve_in_worktree(self.worktree, path)
        if not target.is_file():
            raise ToolError(f"{path} is not a file")
        if _is_binary(target):
            raise ToolError(f"{path} is a binary file")
        lines = target.read_text(encoding="utf-8", errors="replace").splitlines()
        start = _as_int(start_line, "start_line", 1)
        end = _as_int(end_line, "end_line", len(lines))
        if start < 1 or end < start - 1:
            raise ToolError(f"bad line range {start}..{end} (the file has {len(lines)} lines)")
        shown = [f"{number:>6}\t{lines[number - 1]}" for number in range(start, min(end, len(lines)) + 1)]
        if not shown:
            return ToolResult(output=f"(no lines in range {start}..{end}; the file has {len(lines)} lines)")
        return ToolResult(output=cap_text("\n".join(shown), self.max_output_bytes))

    def write_file(self, path: str, content: str) -> ToolResult:
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        target = resolve_in_worktree(self.worktree, path)
        if target.is_dir():
            raise ToolError(f"{path} is a folder")
        existed = target.exists()
        _write_keeping_mode(target, content)
        verb = "overwrote" if existed else "created"
        return ToolResult(output=f"{verb} {_relative(self.worktree, target)} ({len(content)} characters)")

    def str_replace(self, path: str, old_str: str, new_str: str) -> ToolResult:
        if not isinstance(old_str, str) or not isinstance(new_str, str):
            raise ToolError("old_str and new_str must be strings")
        if not old_str:
            raise ToolError("old_str must not be empty (use write_file to create a file)")
        target = resolve_in_worktree(self.worktree, path)
        if not target.is_file():
            raise ToolError(f"{path} is not a file")
        text = target.read_text(encoding="utf-8")
        count = text.count(old_str)
        if count == 0:
            raise ToolError(f"old_str was not found in {path}; nothing changed")
        if count > 1:
            raise ToolError(f"old_str occurs {count} times in {path}; give more context so it is unique")
        _write_keeping_mode(target, text.replace(old_str, new_str, 1))
        line = text[: text.index(old_str)].count("\n") + 1
        return ToolResult(output=f"edited {_relative(self.worktree, target)} at line {line}")

    def search(self, pattern: str, path: str = ".", timeout_s: float | None = None) -> ToolResult:
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("pattern must be a non-empty string")
        target = resolve_in_worktree(self.worktree, path)
        rel = _relative(self.worktree, target)
        result = self._sandbox(
            ["grep", "-rnIE", "--exclude-dir=.git", "--color=never", "-e", pattern, "--", rel], timeout_s
        )
        if result.exit_code == 1 and not result.output.strip().replace("[exit code 1]", ""):
            result.output = "no matches"
        return result

    def list_dir(self, path: str = ".", depth: int | None = None) -> ToolResult:
        target = resolve_in_worktree(self.worktree, path)
        if not target.is_dir():
            raise ToolError(f"{path} is not a folder")
        levels = max(1, min(3, _as_int(depth, "depth", 1)))
        entries: list[str] = []

        def walk(folder: Path, level: int) -> None:
            for child in sorted(folder.iterdir(), key=lambda p: p.name):
                if child.name == ".git" or len(entries) >= _MAX_LIST_ENTRIES:
                    continue
                rel = child.relative_to(self.worktree).as_posix()
                is_dir = child.is_dir() and not child.is_symlink()
                entries.append(rel + ("/" if is_dir else ""))
                if is_dir and level < levels:
                    walk(child, level + 1)

        walk(target, 1)
        if len(entries) >= _MAX_LIST_ENTRIES:
            entries.append(f"[listing stopped at {_MAX_LIST_ENTRIES} entries]")
        return ToolResult(output=cap_text("\n".join(entries) or "(empty folder)", self.max_output_bytes))

    def run_python(self, code: str, timeout_s: float | None = None) -> ToolResult:
        if not isinstance(code, str) or not code.strip():
            raise ToolError("code must be a non-empty string")
        return self._sandbox([self.python, "-c", code], timeout_s)

    def run_tests(self, k: str | None = None, paths: Any = None, timeout_s: float | None = None) -> ToolResult:
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no"]
        if k is not None:
            if not isinstance(k, str):
                raise ToolError("k must be a string")
            if k.strip():
                cmd += ["-k", k]
        if paths is not None:
            if isinstance(paths, str):
                paths = [paths]
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ToolError("paths must be a list of strings")
            for node in paths:
                file_part = node.split("::", 1)[0]
                resolve_in_worktree(self.worktree, file_part)  # raises for escapes
                if node.startswith("-"):
                    raise ToolError(f"path {node!r} looks like an option")
            cmd += ["--", *paths] if paths else []
        return self._sandbox(cmd, timeout_s)

    def git_diff(self) -> ToolResult:
        if not self.base_commit:
            raise ToolError("git_diff is not available: the base commit is unknown")
        text_paths, binary = changed_paths(self.worktree, self.base_commit)
        patch = extract_patch(self.worktree, self.base_commit, self.exclude_from_patch)
        notes = []
        left_out = sorted(p for p in text_paths if p in self.exclude_from_patch)
        if left_out:
            notes.append(f"[left out of the submission (the task's test files): {', '.join(left_out)}]")
        refused = sorted(p for p in text_paths if p not in self.exclude_from_patch and graded_away(p))
        if refused:
            notes.append("[left out of the submission (test files, conftest.py, pytest plugins, .pth files: "
                         f"grading refuses them): {', '.join(refused)}]")
        if binary:
            notes.append(f"[left out of the submission (binary files, symlinks): {', '.join(sorted(binary))}]")
        body = patch or "(no changes yet)"
        return ToolResult(output=cap_text("\n".join([body, *notes]), self.max_output_bytes))

    def submit(self, summary: str | None = None) -> ToolResult:
        self.submitted = True
        return ToolResult(output="submitted", submitted=True)


_TIMED = {"bash", "search", "run_python", "run_tests"}


def _as_int(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ToolError(f"{field} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{field} must be an integer, got {value!r}") from exc


def _describe_type_error(exc: TypeError) -> str:
    text = str(exc)
    match = re.search(r"(missing .*|got an unexpected keyword argument .*)", text)
    return match.group(1) if match else text


def _write_keeping_mode(target: Path, content: str) -> None:
    """Atomic write that keeps an existing file's mode (mkstemp would make it 0600, a spurious mode diff)."""
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, content)
    os.chmod(target, mode)


def which_python(env: Mapping[str, str] | None) -> str:
    """The python the sandbox will find first on the given PATH (the instance environment's, when set)."""
    path = (env or {}).get("PATH") or os.environ.get("PATH", "")
    return shutil.which("python", path=path) or shutil.which("python3", path=path) or "python3"
