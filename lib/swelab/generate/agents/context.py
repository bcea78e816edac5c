"""Code context for patch mode: BM25 over the repository's files at the base commit (bm25s), or the
files the gold patch touches (oracle), packed into a token budget.

Retrieval works on windows of lines rather than whole files, so a small model with a 2k-token window
still sees the most relevant part of a big file; windows of one file are shown together, in order."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from swelab.diffs import changed_files

WINDOW_LINES = 40
MAX_FILE_BYTES = 400_000  # generated or vendored blobs past this are not source worth reading
CHARS_PER_TOKEN = 4  # the usual estimate for code with BPE tokenizers; the budget is approximate
_TEXT_SUFFIXES = {
    ".py", ".pyi", ".pyx", ".c", ".h", ".cc", ".cpp", ".hpp", ".js", ".ts", ".tsx", ".jsx", ".java", ".go",
    ".rs", ".rb", ".php", ".cfg", ".ini", ".toml", ".txt", ".rst", ".md", ".yaml", ".yml", ".json", ".html",
    ".css", ".sh", ".in", ".sql", ".tex", ".f", ".f90", ".jl", ".r", ".scala", ".kt", ".swift", "",
}


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True)
class Window:
    path: str
    start: int  # 1-based first line
    lines: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.lines) - 1


@dataclass(frozen=True)
class CodeContext:
    text: str  # rendered for the prompt
    files: list[str]  # in rank order
    tokens: int  # estimated
    mode: str


def list_files(root: Path) -> list[str]:
    """Tracked text files of the worktree (git ls-files), small enough to be source."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True)
    out = []
    for rel in listing.stdout.split("\0"):
        if not rel or Path(rel).suffix.lower() not in _TEXT_SUFFIXES:
            continue
        path = root / rel
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                continue
        except OSError:
            continue
        out.append(rel)
    return out


def _read_lines(path: Path) -> list[str] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", errors="replace").splitlines()


def windows_of(root: Path, files: list[str]) -> list[Window]:
    out = []
    for rel in files:
        lines = _read_lines(root / rel)
        if not lines:
            continue
        for start in range(0, len(lines), WINDOW_LINES):
            out.append(Window(rel, start + 1, tuple(lines[start : start + WINDOW_LINES])))
    return out


def _doc_text(window: Window) -> str:
    body = "\n".join(window.lines)
    # split snake_case and CamelCase so `get_value` in code meets "value" in an issue text
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", body).replace("_", " ")
    path_words = re.sub(r"[/._-]+", " ", window.path)
    return f"{path_words} {path_words} {body} {words}"


class _Index:
    def __init__(self, windows: list[Window]):
        import bm25s

        self.windows = windows
        self.retriever = None
        if windows:
            tokens = bm25s.tokenize([_doc_text(w) for w in windows], stopwords="en", show_progress=False)
            self.retriever = bm25s.BM25()
            self.retriever.index(tokens, show_progress=False)

    def rank(self, query: str, k: int) -> list[int]:
        import bm25s

        if self.retriever is None or not query.strip():
            return list(range(min(k, len(self.windows))))
        k = min(k, len(self.windows))
        query_tokens = bm25s.tokenize([_doc_text(Window("", 1, (query,)))], stopwords="en", show_progress=False)
        if not query_tokens.vocab:
            return list(range(k))
        docs, scores = self.retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        return [int(d) for d, s in zip(docs[0], scores[0], strict=True) if s > 0] or list(range(k))


# Indexes by (base commit, mode, files): 128 concurrent attempts on one instance build it once.
_CACHE: OrderedDict[tuple, _Index] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple, threading.Lock] = {}
_CACHE_SIZE = 16  # a pandas-sized repo: ~12 s to index on one core, ~50 MB kept


def _head(root: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def _index_for(root: Path, files: list[str]) -> _Index:
    head = _head(root)
    key = (head, tuple(files)) if head else None
    if key is None:
        return _Index(windows_of(root, files))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        index = _Index(windows_of(root, files))
        with _CACHE_LOCK:
            _CACHE[key] = index
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
            _KEY_LOCKS.pop(key, None)
        return index


def _render(chosen: list[Window]) -> tuple[str, list[str]]:
    by_file: OrderedDict[str, list[Window]] = OrderedDict()
    for window in chosen:
        by_file.setdefault(window.path, []).append(window)
    parts = []
    for path, windows in by_file.items():
        windows.sort(key=lambda w: w.start)
        for window in windows:
            parts.append(f"[{path}, lines {window.start}-{window.end}]\n" + "\n".join(window.lines))
    return "\n\n".join(parts), list(by_file)


def build_context(
    root: Path, query: str, *, mode: str = "bm25", budget_tokens: int = 6000, gold_patch: str | None = None
) -> CodeContext:
    """The code the model sees: best-ranked windows packed greedily until the token budget is used."""
    if mode not in ("bm25", "oracle"):
        raise ValueError(f"context mode {mode!r}: expected 'bm25' or 'oracle'")
    if mode == "oracle":
        if not gold_patch:
            raise ValueError("context 'oracle' needs the instance's gold patch")
        files = [f for f in changed_files(gold_patch) if (root / f).is_file()]
    else:
        files = list_files(root)
    index = _index_for(root, files)
    ranked = index.rank(query, k=max(50, 4 * budget_tokens // (WINDOW_LINES * 8) + 10))
    if mode == "oracle":  # every window of the gold files is a candidate; best-ranked first
        ranked += [i for i in range(len(index.windows)) if i not in set(ranked)]
    chosen: list[Window] = []
    used = 0
    for i in ranked:
        window = index.windows[i]
        cost = estimate_tokens("\n".join(window.lines)) + estimate_tokens(window.path) + 8
        if used + cost > budget_tokens:
            continue  # a smaller window further down may still fit
        chosen.append(window)
        used += cost
    text, ordered = _render(chosen)
    return CodeContext(text, ordered, estimate_tokens(text), mode)
