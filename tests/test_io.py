"""Atomic writes: the file is complete or absent, never half written, and readable like any other file."""

from __future__ import annotations

import os
import stat

import pytest

from swelab import io


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "b.json"
    io.write_json(path, {"x": 1})
    io.write_json(path, {"x": 2})
    assert io.read_json(path) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    io.atomic_write_text(path, "old")

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        io.atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["c.txt"]


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        io.read_jsonl(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
