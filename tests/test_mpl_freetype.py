"""swelab.workspace.mpl_freetype: the FreeType a matplotlib checkout's image comparisons are drawn with, put under
its build/ before the install (from SWELAB_FREETYPE_SOURCE, else setupext's own download), else the system's
with a line that says so. The download hosts are stood in by a patched urlopen: no network here or in CI."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

import pytest

from swelab.workspace import mpl_freetype

# matplotlib 3.6's setupext.py (base commit of matplotlib__matplotlib-23913), the lines this step reads
SETUPEXT = """
_freetype_hashes = {
    '2.6.1':
        '0a3c7dfbda6da1e8fce29232e8e96d987ababbbf71ebc8c75659e4132c367014',
    '2.6.2':
        '8da42fc4904e600be4b692555ae1dcbf532897da9c5b9fb5ebd3758c77e5c2d4',
}
# This is the version of FreeType to use when building a local version.
TESTING_VERSION_OF_FREETYPE = '2.6.1'
if sys.platform.startswith('win') and platform.machine() == 'ARM64':
    LOCAL_FREETYPE_VERSION = '2.11.1'
else:
    LOCAL_FREETYPE_VERSION = TESTING_VERSION_OF_FREETYPE
"""


def _freetype_tree(root: Path, version: str = "2.6.1", configure: bool = True) -> Path:
    """A FreeType source tree as far as this step looks: its version header and its configure script."""
    major, minor, patch = version.split(".")
    header = root / "include" / "freetype" / "freetype.h"
    header.parent.mkdir(parents=True)
    header.write_text(f"#define FREETYPE_MAJOR  {major}\n#define FREETYPE_MINOR  {minor}\n"
                      f"#define FREETYPE_PATCH  {patch}\n")
    if configure:
        (root / "builds" / "unix").mkdir(parents=True)
        (root / "builds" / "unix" / "configure").write_text("#!/bin/sh\n")
    return root


def _tarball(tmp_path: Path, version: str = "2.6.1") -> Path:
    tree = _freetype_tree(tmp_path / "made" / f"freetype-{version}", version)
    path = tmp_path / f"freetype-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(tree, arcname=tree.name)
    return path


def _checkout(tmp_path: Path, setupext: str = SETUPEXT) -> Path:
    checkout = tmp_path / "setup-src"
    checkout.mkdir()
    (checkout / "setupext.py").write_text(setupext)
    return checkout


@pytest.fixture
def offline(monkeypatch):
    """No download host answers (as on this machine and in CI); records the URLs tried."""
    tried: list[str] = []

    def refuse(url, timeout=None):
        tried.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


def test_the_version_and_hash_come_from_the_checkouts_setupext():
    assert mpl_freetype.wanted_version(SETUPEXT) == "2.6.1"
    assert mpl_freetype.wanted_sha256(SETUPEXT, "2.6.1") == (
        "0a3c7dfbda6da1e8fce29232e8e96d987ababbbf71ebc8c75659e4132c367014")
    assert mpl_freetype.wanted_version("LOCAL_FREETYPE_VERSION = '2.6.1'\n") == "2.6.1"  # before 3.4's split
    with pytest.raises(mpl_freetype.FreeTypeSourceError, match="names no local FreeType"):
        mpl_freetype.wanted_version("import os\n")


@pytest.mark.parametrize("form", ["tarball", "folder"])
def test_a_given_source_is_put_where_setupext_looks_and_the_build_links_it(tmp_path, offline, form):
    checkout = _checkout(tmp_path)
    source = _tarball(tmp_path) if form == "tarball" else _freetype_tree(tmp_path / "ft")
    config = tmp_path / "mplsetup.cfg"
    how = mpl_freetype.prepare(checkout, config, {mpl_freetype.SOURCE_VARIABLE: str(source)})
    assert how.startswith("local FreeType 2.6.1 from SWELAB_FREETYPE_SOURCE")
    assert mpl_freetype.source_version(checkout / "build" / "freetype-2.6.1") == "2.6.1"
    assert config.read_text() == "[libs]\nsystem_freetype = False\nsystem_qhull = True\n"
    assert sorted(p.name for p in (checkout / "build").iterdir()) == ["freetype-2.6.1"]  # no staging left
    assert offline == []  # a given source is never downloaded over


def test_a_source_of_another_release_is_refused_by_name_and_nothing_is_left(tmp_path, offline):
    checkout = _checkout(tmp_path)
    source = _tarball(tmp_path, "2.12.1")
    with pytest.raises(mpl_freetype.FreeTypeSourceError) as error:
        mpl_freetype.prepare(checkout, tmp_path / "mplsetup.cfg", {mpl_freetype.SOURCE_VARIABLE: str(source)})
    assert f"SWELAB_FREETYPE_SOURCE={source}: FreeType 2.12.1" in str(error.value)
    assert "builds FreeType 2.6.1" in str(error.value)
    assert list((checkout / "build").iterdir()) == []
    assert not (tmp_path / "mplsetup.cfg").exists()
    with pytest.raises(mpl_freetype.FreeTypeSourceError, match="no such file or folder"):
        mpl_freetype.prepare(checkout, tmp_path / "mplsetup.cfg", {mpl_freetype.SOURCE_VARIABLE: "/nonexistent"})


def test_a_git_checkout_of_the_release_tag_is_configured_with_its_autogen(tmp_path, offline):
    tree = _freetype_tree(tmp_path / "ft", configure=False)
    (tree / "autogen.sh").write_text("mkdir -p builds/unix && echo generated > builds/unix/configure\n")
    checkout = _checkout(tmp_path)
    mpl_freetype.prepare(checkout, tmp_path / "mplsetup.cfg", {mpl_freetype.SOURCE_VARIABLE: str(tree)})
    assert (checkout / "build" / "freetype-2.6.1" / "builds" / "unix" / "configure").read_text() == "generated\n"
    assert not (tree / "builds").exists()  # the given folder is copied, never changed


def test_without_a_source_or_a_download_the_system_freetype_is_used_and_said(tmp_path, offline):
    checkout = _checkout(tmp_path)
    config = tmp_path / "mplsetup.cfg"
    how = mpl_freetype.prepare(checkout, config, {})
    assert how.startswith("system FreeType: FreeType 2.6.1 could not be downloaded")
    assert "SWELAB_FREETYPE_SOURCE" in how
    assert config.read_text() == "[libs]\nsystem_freetype = True\nsystem_qhull = True\n"
    assert offline == [url.format(version="2.6.1", tarball="freetype-2.6.1.tar.gz")
                       for url in mpl_freetype.DOWNLOAD_URLS]


def test_the_download_takes_the_first_answer_with_setupexts_hash(tmp_path, monkeypatch):
    good = _tarball(tmp_path).read_bytes()
    setupext = SETUPEXT.replace("0a3c7dfbda6da1e8fce29232e8e96d987ababbbf71ebc8c75659e4132c367014",
                                hashlib.sha256(good).hexdigest())
    answers = iter([b"<html>a mirror's error page</html>", good])  # sourceforge: wrong bytes; savannah: right

    def answer(url, timeout=None):
        return io.BytesIO(next(answers))

    monkeypatch.setattr(urllib.request, "urlopen", answer)
    checkout = _checkout(tmp_path, setupext)
    how = mpl_freetype.prepare(checkout, tmp_path / "mplsetup.cfg", {})
    assert how == "local FreeType 2.6.1, downloaded as setupext.py does"
    assert mpl_freetype.source_version(checkout / "build" / "freetype-2.6.1") == "2.6.1"
    assert not (checkout / "build" / "freetype-2.6.1.tar.gz").exists()


def test_main_reports_a_bad_source_on_stderr_with_exit_1(tmp_path, offline, monkeypatch, capsys):
    checkout = _checkout(tmp_path)
    monkeypatch.chdir(checkout)
    monkeypatch.setenv(mpl_freetype.SOURCE_VARIABLE, str(tmp_path / "missing.tar.gz"))
    assert mpl_freetype.main(["../mplsetup.cfg"]) == 1
    assert "ERROR: SWELAB_FREETYPE_SOURCE=" in capsys.readouterr().err
    monkeypatch.delenv(mpl_freetype.SOURCE_VARIABLE)
    assert mpl_freetype.main(["../mplsetup.cfg"]) == 0
    assert "swelab: system FreeType" in capsys.readouterr().out
