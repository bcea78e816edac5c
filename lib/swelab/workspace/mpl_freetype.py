"""Give a matplotlib checkout the FreeType its tests are drawn with, before its install (a pre_install step).

matplotlib's image comparisons that draw text expect the glyphs of the FreeType release its setupext.py names
(2.6.1 for 3.5-3.7), which its build downloads and links statically; the official image's install does exactly
that. Another FreeType (Debian's 2.12.1) renders text a few pixels apart and those comparisons fail. This step
runs in the environment's setup checkout and, in order:
1. takes `SWELAB_FREETYPE_SOURCE` (that release's tarball, or its unpacked source folder; a git checkout of the
   release tag is configured with its autogen.sh) when set: for machines that cannot reach the download hosts;
2. else fetches the tarball as setupext would (its URLs, its sha256);
3. else falls back to the system's FreeType (`system_freetype = True`) and says so: the build still works, and
   text image comparisons may disagree with the official verdict (docs/FIDELITY.md).
The source lands in build/freetype-<version>/, where setupext looks first; the in-place build of each
evaluation links that same tree (recipes: _MPL_BUILD). qhull always comes from the system (the same release).

Run as `python -m swelab.workspace.mpl_freetype MPLSETUP_CFG` in the setup checkout.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

SOURCE_VARIABLE = "SWELAB_FREETYPE_SOURCE"
DOWNLOAD_URLS = (  # setupext.py's own, in its order
    "https://downloads.sourceforge.net/project/freetype/freetype2/{version}/{tarball}",
    "https://download.savannah.gnu.org/releases/freetype/{tarball}",
    "https://download.savannah.gnu.org/releases/freetype/freetype-old/{tarball}",
)
DOWNLOAD_TIMEOUT_S = 30


class FreeTypeSourceError(RuntimeError):
    """SWELAB_FREETYPE_SOURCE is set but does not hold the release the checkout asks for."""


def wanted_version(setupext: str) -> str:
    """The FreeType release a checkout's setupext.py builds locally (TESTING_VERSION_OF_FREETYPE, else
    LOCAL_FREETYPE_VERSION)."""
    for name in ("TESTING_VERSION_OF_FREETYPE", "LOCAL_FREETYPE_VERSION"):
        match = re.search(rf"^{name} = ['\"]([0-9.]+)['\"]", setupext, re.MULTILINE)
        if match:
            return match.group(1)
    raise FreeTypeSourceError("setupext.py names no local FreeType version")


def wanted_sha256(setupext: str, version: str) -> str | None:
    """The tarball's sha256 from setupext.py's table, None when it has none."""
    match = re.search(rf"['\"]{re.escape(version)}['\"]:\s*['\"]([0-9a-f]{{64}})['\"]", setupext)
    return match.group(1) if match else None


def source_version(tree: Path) -> str:
    """The release a FreeType source tree is, from include/freetype/freetype.h ("" when it is not one)."""
    header = tree / "include" / "freetype" / "freetype.h"
    if not header.is_file():
        return ""
    text = header.read_text(errors="replace")
    parts = [re.search(rf"#define FREETYPE_{part}\s+(\d+)", text) for part in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(match.group(1) for match in parts) if all(parts) else ""


def unpack(source: Path, build: Path, version: str) -> Path:
    """Copy or extract `source` (a tarball or a folder) to build/freetype-<version>; returns that folder."""
    target = build / f"freetype-{version}"
    staging = build / f".freetype-{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    if source.is_dir():
        tree = staging / "src"
        shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    elif source.is_file():
        with tarfile.open(source) as archive:
            tops = {name.split("/", 1)[0] for name in archive.getnames()}
            if len(tops) != 1:
                raise FreeTypeSourceError(f"{SOURCE_VARIABLE}={source}: a tarball with one top folder expected, "
                                          f"found {sorted(tops)[:5]}")
            # the data filter (no links out, no devices) where this Python has it
            archive.extractall(staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        tree = staging / tops.pop()
    else:
        raise FreeTypeSourceError(f"{SOURCE_VARIABLE}={source}: no such file or folder")
    found = source_version(tree)
    if found != version:
        shutil.rmtree(staging, ignore_errors=True)
        raise FreeTypeSourceError(f"{SOURCE_VARIABLE}={source}: FreeType {found or '(not a FreeType source)'}, "
                                  f"but this checkout's setupext.py builds FreeType {version}")
    if not (tree / "builds" / "unix" / "configure").exists() and (tree / "autogen.sh").exists():
        # a git checkout of the release tag: its configure script is generated (needs autoconf, automake, libtool)
        done = subprocess.run(["sh", "autogen.sh"], cwd=tree, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise FreeTypeSourceError(f"{SOURCE_VARIABLE}={source}: autogen.sh failed (autoconf, automake and "
                                      f"libtool are needed for a git checkout): {done.stderr.strip()[-300:]}")
    shutil.rmtree(target, ignore_errors=True)
    tree.rename(target)
    shutil.rmtree(staging)
    return target


def download(version: str, sha256: str | None, build: Path) -> Path | None:
    """setupext's download: the first URL that answers with the expected bytes, extracted; None when none does."""
    if sha256 is None:
        return None
    tarball = f"freetype-{version}.tar.gz"
    for pattern in DOWNLOAD_URLS:
        try:
            with urllib.request.urlopen(pattern.format(version=version, tarball=tarball),
                                        timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != sha256:
            continue
        saved = build / tarball
        saved.write_bytes(data)
        try:
            return unpack(saved, build, version)
        finally:
            saved.unlink()
    return None


def prepare(checkout: Path, config: Path, environ: dict[str, str] | None = None) -> str:
    """Put the FreeType the checkout asks for under its build/ and write the mplsetup.cfg; returns what was done
    (one line for the build log)."""
    environ = dict(os.environ if environ is None else environ)
    setupext = (checkout / "setupext.py").read_text()
    version = wanted_version(setupext)
    build = checkout / "build"
    build.mkdir(exist_ok=True)
    source = environ.get(SOURCE_VARIABLE, "").strip()
    if source:
        unpack(Path(source).expanduser(), build, version)
        how = f"local FreeType {version} from {SOURCE_VARIABLE}"
    elif download(version, wanted_sha256(setupext, version), build) is not None:
        how = f"local FreeType {version}, downloaded as setupext.py does"
    else:
        how = (f"system FreeType: FreeType {version} could not be downloaded and {SOURCE_VARIABLE} is not set; "
               "image comparisons that draw text may fail (docs/FIDELITY.md)")
    system_freetype = how.startswith("system")
    config.write_text(f"[libs]\nsystem_freetype = {system_freetype}\nsystem_qhull = True\n")
    return how


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m swelab.workspace.mpl_freetype MPLSETUP_CFG  (run in a matplotlib checkout)",
              file=sys.stderr)
        return 2
    try:
        print(f"swelab: {prepare(Path.cwd(), Path(args[0]))}")
    except FreeTypeSourceError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
