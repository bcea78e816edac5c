"""One cgroup per sandboxed run, when the machine lets us make one: the run's total memory and process count.

rlimits bound each process; only a cgroup bounds the run as a whole (a fork bomb of small processes, many
processes each under the address-space limit), and RLIMIT_NPROC does not bind at all where the sandbox's
processes map to the host's root. Two kinds are used, whichever the machine offers:
- cgroup v2 with the `memory` and `pids` controllers delegated to our own cgroup (enabled in its
  cgroup.subtree_control and writable by us): a child `swelab-<id>` with memory.max, memory.swap.max, pids.max;
- cgroup v1 with writable `memory` and `pids` hierarchies (root in a VM or a privileged container): a child
  `swelab-<id>` under our own cgroup of each, with memory.limit_in_bytes and pids.max.
The child is made under our own cgroup, never elsewhere, so the run stays inside whatever limit the host gives us.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_RMDIR_TRIES = 50


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> our cgroup's path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _v2_parent() -> Path | None:
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        return None
    parent = CGROUP_ROOT / _own_paths().get("", "/").lstrip("/")
    enabled = (parent / "cgroup.subtree_control").read_text().split() if parent.is_dir() else []
    if {"memory", "pids"} <= set(enabled) and os.access(parent, os.W_OK):
        return parent
    return None


def _v1_parents() -> dict[str, Path] | None:
    own = _own_paths()
    parents = {}
    for controller in ("memory", "pids"):
        base = CGROUP_ROOT / controller
        if controller not in own or not (base / "cgroup.procs").exists():
            return None
        parent = base / own[controller].lstrip("/")
        if not os.access(parent, os.W_OK):
            return None
        parents[controller] = parent
    return parents


@dataclass
class RunCgroup:
    """The cgroup(s) of one run: join by writing a pid to every file of `procs_files`."""

    kind: str  # "cgroup2" or "cgroup1"
    dirs: dict[str, Path]  # controller (or "" for v2) -> the run's cgroup folder
    memory_bytes: int
    processes: int

    @property
    def procs_files(self) -> list[Path]:
        return [folder / "cgroup.procs" for folder in self.dirs.values()]

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except (OSError, KeyError):
            return ""

    def limits_hit(self) -> list[str]:
        """One line per limit the run ran into (the verdict's log says which)."""
        hits = []
        pids_ctl, mem_ctl = ("", "") if self.kind == "cgroup2" else ("pids", "memory")
        if _event(self._read(pids_ctl, "pids.events"), "max"):
            hits.append(f"processes: a fork was refused at the limit of {self.processes} processes/threads")
        if self.kind == "cgroup2":
            ooms = _event(self._read(mem_ctl, "memory.events"), "oom_kill")
        else:
            ooms = _event(self._read(mem_ctl, "memory.oom_control"), "oom_kill")
            ooms = ooms or int(self._read(mem_ctl, "memory.failcnt").strip() or 0)
        if ooms:
            hits.append(f"memory: the run reached its limit of {self.memory_bytes} bytes (processes killed)")
        return hits

    def remove(self) -> None:
        """Kill whatever is left in it, then remove it (a run never leaves a process or a cgroup behind)."""
        for folder in self.dirs.values():
            for _ in range(_RMDIR_TRIES):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    for pid in (folder / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
                    time.sleep(0.05)


def _event(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def create(memory_bytes: int, processes: int) -> RunCgroup | None:
    """A fresh cgroup with the limits set, or None where the machine offers none (see `mechanism`)."""
    kind = mechanism()
    if kind is None:
        return None
    name = f"swelab-{uuid.uuid4().hex[:12]}"
    if kind == "cgroup2":
        parent = _v2_parent()
        assert parent is not None
        folder = parent / name
        folder.mkdir()
        cgroup = RunCgroup(kind, {"": folder}, memory_bytes, processes)
        settings = {"memory.max": memory_bytes, "memory.swap.max": 0, "pids.max": processes}
        targets = {key: folder for key in settings}
    else:
        parents = _v1_parents()
        assert parents is not None
        dirs = {controller: parent / name for controller, parent in parents.items()}
        for folder in dirs.values():
            folder.mkdir()
        cgroup = RunCgroup(kind, dirs, memory_bytes, processes)
        settings = {"memory.limit_in_bytes": memory_bytes, "pids.max": processes}
        targets = {"memory.limit_in_bytes": dirs["memory"], "pids.max": dirs["pids"]}
    try:
        for key, value in settings.items():
            path = targets[key] / key
            if path.exists():
                path.write_text(str(value))
        if kind == "cgroup1" and (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
            (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))  # no swap either
    except OSError:
        cgroup.remove()
        raise
    return cgroup


@functools.lru_cache(maxsize=1)
def mechanism() -> str | None:
    """"cgroup2", "cgroup1" or None: which kind of per-run cgroup this machine lets us make (probed once, by
    making and removing one)."""
    for kind, usable in (("cgroup2", _v2_parent), ("cgroup1", _v1_parents)):
        try:
            if not usable():
                continue
        except OSError:
            continue
        probe_name = f"swelab-probe-{uuid.uuid4().hex[:8]}"
        parents = {"": usable()} if kind == "cgroup2" else usable()
        made = []
        try:
            for parent in parents.values():
                (parent / probe_name).mkdir()
                made.append(parent / probe_name)
            return kind
        except OSError:
            continue
        finally:
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    pass
    return None
