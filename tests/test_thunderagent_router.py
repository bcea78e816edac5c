"""The workbench's `thunderagent` provider through the REAL ThunderAgent router (the wheel vendored in
../shared/vendor, built unchanged from its repository), in front of a vLLM stand-in (tests/fake_vllm_server.py)
whose small KV cache makes the "tr" router's capacity scheduler queue and resume programs.

Every claim is checked against the router's own state: GET /programs, /health, /profiles and its log
("Released and removed program: <id>" once per release that found the program; one access-log line per
POST /programs/release). Concurrency is proven by barriers, never by a stopwatch.
Skipped, with the reason, when ThunderAgent is neither installed nor vendored."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_vllm_server import FakeVLLMServer

from swelab.analyze.results import load_profiles
from swelab.generate.providers import open_program
from swelab.generate.serve import (
    PROGRAM_PROFILE_FILE,
    ServerProcess,
    free_port,
    managed_process,
    save_thunderagent_state,
    serve_main,
    thunderagent_command,
)
from swelab.io import write_json
from swelab.params import ModelConfig

PROJECT = Path(__file__).resolve().parents[1]
WHEEL = Path(os.environ.get("SWELAB_THUNDERAGENT_WHEEL")
             or PROJECT.parent / "shared" / "vendor" / "thunderagent-0.1.0-py3-none-any.whl")
N_PROGRAMS = 64


def _importable() -> bool:
    importlib.invalidate_caches()
    try:
        for name in ("ThunderAgent", "fastapi", "uvicorn", "httpx"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def thunderagent() -> None:
    """ThunderAgent importable in this environment: installed already, or installed now from the vendored wheel
    (--no-deps; its dependencies fastapi, httpx, uvicorn from the package index)."""
    if _importable():
        return
    if not WHEEL.is_file():
        pytest.skip(f"ThunderAgent is not installed and there is no wheel at {WHEEL} "
                    "(set SWELAB_THUNDERAGENT_WHEEL, or pip install git+https://github.com/ThunderAgent-org/ThunderAgent)")
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    for args in ([*pip, "--no-deps", str(WHEEL)], [*pip, "fastapi", "httpx", "uvicorn"]):
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"could not install ThunderAgent ({' '.join(args[4:])}): {done.stderr.strip()[-300:]}")
    if not _importable():
        pytest.skip(f"ThunderAgent installed from {WHEEL} but not importable")


@contextmanager
def router(backend: FakeVLLMServer, log_dir: Path, *mode: str) -> Iterator[ServerProcess]:
    """The real router in front of `backend`, started the way `swelab serve --thunderagent` starts it."""
    port = free_port()
    cmd = thunderagent_command([backend.base_url], port=port, host="127.0.0.1",
                               extra_args=("--backend-type", "vllm", *mode))
    url = f"http://127.0.0.1:{port}"
    with managed_process(cmd, url + "/health", name="ThunderAgent", startup_timeout_s=120,
                         log_path=log_dir / "thunderagent.log", base_url=url + "/v1") as server:
        yield server


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def routed_model(ta: ServerProcess) -> ModelConfig:
    return ModelConfig(name="routed", kind="patch", provider="thunderagent", model_id="fake", base_url=ta.base_url,
                       max_output=16, options={"max_retries": 0, "request_timeout_s": 300})


def run_programs(cfg: ModelConfig, run_dir: Path, n: int, steps: int,
                 after_first: Callable[[], object] | None = None) -> list[dict]:
    """n agent programs at once, each `steps` calls in one attempt; each one's program id and release status."""
    def program(i: int) -> dict:
        cell = run_dir / "cells" / "routed" / f"inst-{i}" / "1"
        with open_program(cfg, cell, f"inst-{i}", 1) as client:
            for step in range(steps):
                client.complete([{"role": "user", "content": f"program {i:02d}, step {step}: fix the bug"}])
                if step == 0 and after_first:
                    after_first()
        return {"program_id": client.program_id, "release": client.release_status}

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(program, range(n)))


def assert_released_exactly_once(router_log: str, program_ids: list[str]) -> None:
    released = re.findall(r"Released and removed program: (\S+)", router_log)
    assert sorted(released) == sorted(program_ids)  # each found and removed once, no other
    assert router_log.count('"POST /programs/release HTTP/1.1" 200') == len(program_ids)  # no second release


def test_64_programs_at_once_through_the_default_router(tmp_path, thunderagent):
    run_dir = tmp_path / "run"
    snapshot: dict[str, object] = {}
    with FakeVLLMServer() as backend:
        # the first answer waits until all 64 requests are at the backend: the router passed them together
        backend.hold_until_in_flight(N_PROGRAMS, timeout_s=120)
        with router(backend, tmp_path, "--router", "default") as ta:
            root = ta.base_url.removesuffix("/v1")

            def mid_run() -> None:  # once, when every program has its first answer and none is released
                snapshot["programs"] = get_json(root + "/programs")
                snapshot["saved"] = save_thunderagent_state(ta.base_url, run_dir)

            between = threading.Barrier(N_PROGRAMS, action=mid_run, timeout=120)
            results = run_programs(routed_model(ta), run_dir, N_PROGRAMS, 2, between.wait)
            after = get_json(root + "/programs")
            assert ta.crashed() is None
        router_log = ta.log_path.read_text()
    assert backend.barrier_error is None, backend.barrier_error
    pids = [r["program_id"] for r in results]
    assert len(set(pids)) == N_PROGRAMS and all(r["release"]["ok"] for r in results)
    programs = snapshot["programs"]
    assert set(programs) == set(pids) and {p["step_count"] for p in programs.values()} == {1}
    assert after == {}  # none left behind
    assert_released_exactly_once(router_log, pids)
    saved = json.loads((run_dir / "thunderagent" / "programs.json").read_text())
    assert set(saved) == set(pids)
    assert snapshot["saved"] == {"programs": True, "profiles": False}  # no --profile: GET /profiles says 400


def test_64_programs_through_the_tr_router_wait_for_capacity_and_are_released_once(tmp_path, thunderagent):
    run_dir = tmp_path / "run"
    seen: dict[str, object] = {}
    with FakeVLLMServer(block_size=16, num_gpu_blocks=40) as backend:  # 640 tokens of KV cache
        with router(backend, tmp_path, "--router", "tr", "--metrics", "--profile",
                    "--profile-dir", str(tmp_path / "profile-csv"),
                    "--metrics-interval", "0.2", "--scheduler-interval", "0.2") as ta:
            root = ta.base_url.removesuffix("/v1")

            def hold_until_all_arrived(_number: int) -> None:
                # the requests the router let through wait until every program has reached the router: the
                # others are then waiting in its queue (deterministic, whatever the machine's speed)
                deadline = time.monotonic() + 120
                while "health" not in seen:
                    health = get_json(root + "/health")
                    if health["programs_count"] >= N_PROGRAMS:
                        seen.setdefault("health", health)
                        seen.setdefault("programs", get_json(root + "/programs"))
                    elif time.monotonic() > deadline:
                        seen["error"] = f"{health['programs_count']} of {N_PROGRAMS} programs reached the router"
                        return
                    else:
                        time.sleep(0.05)

            backend.on_chat = hold_until_all_arrived
            results = run_programs(routed_model(ta), run_dir, N_PROGRAMS, 2)
            after, health_after = get_json(root + "/programs"), get_json(root + "/health")
            save_thunderagent_state(ta.base_url, run_dir)
            assert ta.crashed() is None
        router_log = ta.log_path.read_text()
    assert "error" not in seen, seen.get("error")
    pids = [r["program_id"] for r in results]
    assert len(set(pids)) == N_PROGRAMS and all(r["release"]["ok"] for r in results)
    # every program holds at least 100 tokens of the 640 (backend/state.py: BUFFER_PER_PROGRAM)
    admitted_at_most = backend.capacity_tokens // 100
    assert backend.max_in_flight <= admitted_at_most  # the scheduler, not the clients, set the pace
    assert seen["health"]["paused_count"] >= N_PROGRAMS - admitted_at_most  # the rest were queued (PAUSED)...
    waiting = {pid for pid, p in seen["programs"].items() if p["state"] == "paused"}
    resumed = set(re.findall(r"Resumed program (\S+) to ", router_log))
    assert waiting and waiting <= resumed <= set(pids)  # ...and each one was resumed by the scheduler
    assert after == {} and health_after["paused_count"] == 0  # none left behind
    assert_released_exactly_once(router_log, pids)
    assert (run_dir / "thunderagent" / "profiles.json").is_file()


def test_profiles_of_released_programs_reach_the_run_folder_and_the_analysis(tmp_path, thunderagent):
    # ThunderAgent forgets a program's profile when it is released: the provider keeps each one in its attempt
    # folder before releasing it, and save_thunderagent_state gathers them (serve.PROGRAM_PROFILE_FILE)
    run_dir = tmp_path / "run"
    n = 8
    with FakeVLLMServer(block_size=16, num_gpu_blocks=20) as backend:  # room for about two programs
        with router(backend, tmp_path, "--router", "tr", "--metrics", "--profile",
                    "--profile-dir", str(tmp_path / "profile-csv"),
                    "--metrics-interval", "0.2", "--scheduler-interval", "0.2") as ta:
            results = run_programs(routed_model(ta), run_dir, n, 3)
            assert get_json(ta.base_url.removesuffix("/v1") + "/profiles") == {}  # the router kept none
            saved = save_thunderagent_state(ta.base_url, run_dir)
    pids = sorted(r["program_id"] for r in results)
    kept = sorted(run_dir.rglob(PROGRAM_PROFILE_FILE))
    assert len(kept) == n, "the provider did not keep the programs' profiles before releasing them"
    assert saved["profiles"] is True
    profiles = json.loads((run_dir / "thunderagent" / "profiles.json").read_text())
    assert sorted(profiles) == pids and {p["step_count"] for p in profiles.values()} == {3}
    frame = load_profiles(run_dir)
    assert sorted(frame["program_id"]) == pids
    assert (frame["pause_s"] > 0).any()  # some programs waited for capacity, and the analysis shows it


def test_swelab_serve_thunderagent_starts_the_real_router(tmp_path, thunderagent):
    port = free_port()
    seen: dict[str, object] = {}

    def sleep(_seconds: float) -> None:  # serve_main's watch loop: look at the router once, then stop it
        seen["health"] = get_json(f"http://127.0.0.1:{port}/health")
        raise KeyboardInterrupt

    with FakeVLLMServer() as backend:
        argv = ["served/model", "--thunderagent", "--backends", backend.base_url, "--ta-port", str(port),
                "--log-dir", str(tmp_path / "serve")]
        assert serve_main(argv, sleep=sleep) == 0
        assert backend.metrics_reads >= 1  # the router read the backend's KV-cache size at start
        root = backend.root
    health = seen["health"]
    assert health["router_mode"] == "tr" and health["profile_enabled"] is True
    assert health["backends"] == [root]
    assert "Started scheduler loop" in (tmp_path / "serve" / "thunderagent.log").read_text()


# -- the analysis survives whatever the router answered ----------------------------------------------------

@pytest.mark.parametrize("answer", [
    ["not a profile", {"program_id": "m:i:1:a", "avg_prefill_s": 0.5, "step_count": 2}],
    "Internal Server Error",
    {"error": "Profiling not enabled. Start with --profile flag."},
    {"m:i:1:a": {"avg_prefill_s": 0.5, "step_count": 2}, "m:i:2:b": "junk", "m:i:3:c": {"step_count": "two"}},
    42,
    None,
])
def test_load_profiles_reads_what_it_can_and_says_what_it_could_not(tmp_path, answer):
    write_json(tmp_path / "thunderagent" / "profiles.json", answer)
    frame = load_profiles(tmp_path)  # never raises
    assert list(frame.columns) == ["program_id", "prefill_s", "decode_s", "pause_s", "tool_s"]
    readable = isinstance(answer, (list, dict)) and "m:i:1:a" in json.dumps(answer)
    assert frame["program_id"].tolist() == (["m:i:1:a"] if readable else [])
    if readable:
        assert frame["prefill_s"].tolist() == [1.0]
    problems = frame.attrs["unreadable"]
    assert problems and all("profiles.json" in p for p in problems)  # each names the file


def test_load_profiles_survives_a_file_that_is_not_json(tmp_path):
    (tmp_path / "thunderagent").mkdir()
    (tmp_path / "thunderagent" / "profiles.json").write_text("<html>502 Bad Gateway</html>")
    frame = load_profiles(tmp_path)
    assert frame.empty and "profiles.json" in frame.attrs["unreadable"][0]
