"""`swelab serve`: command lines, health wait and stop with fake processes, ThunderAgent state saving."""

from __future__ import annotations

import json
import subprocess

import pytest
from fake_openai_server import FakeOpenAIServer

from swelab.generate import serve
from swelab.generate.serve import (
    ServeError,
    save_thunderagent_state,
    stop_process,
    thunderagent_command,
    vllm_command,
    wait_healthy,
)


def test_vllm_command_line():
    cmd = vllm_command("Qwen/Qwen3-Coder-30B-A3B-Instruct", tensor_parallel_size=4,
                       tool_call_parser="qwen3_coder", port=8123)
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-Coder-30B-A3B-Instruct"]
    text = " ".join(cmd)
    assert "--tensor-parallel-size 4" in text
    assert "--enable-auto-tool-choice --tool-call-parser qwen3_coder" in text
    assert "--port 8123" in text
    assert "--enable-auto-tool-choice" not in vllm_command("m", tool_call_parser=None)


def test_thunderagent_command_line():
    cmd = thunderagent_command(["http://a:8000/v1", "http://b:8000/"], port=9100, python="py")
    assert cmd == ["py", "-m", "ThunderAgent", "--backends", "http://a:8000,http://b:8000", "--port", "9100",
                   "--backend-type", "vllm", "--router", "tr", "--metrics", "--profile"]
    with pytest.raises(ServeError):
        thunderagent_command([])


def test_serve_main_dry_run_prints_both_commands(capsys):
    assert serve.serve_main(["m/x", "--tp", "2", "--thunderagent", "--ta-port", "9001", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("vllm serve m/x --tensor-parallel-size 2")
    assert "-m ThunderAgent --backends http://127.0.0.1:8000 --port 9001 --backend-type vllm" in lines[1]


def test_serve_main_without_thunderagent_installed_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(serve, "thunderagent_available", lambda: False)
    assert serve.serve_main(["m/x", "--thunderagent", "--backends", "http://a/v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ThunderAgent is not installed" in err and len(err.splitlines()) == 1


class FakeProc:
    def __init__(self, exit_after: int | None = None, stubborn: bool = False):
        self.polls = 0
        self.exit_after = exit_after
        self.stubborn = stubborn
        self.returncode = None
        self.calls: list[str] = []

    def poll(self):
        self.polls += 1
        if self.exit_after is not None and self.polls > self.exit_after:
            self.returncode = 1
        return self.returncode

    def terminate(self):
        self.calls.append("terminate")
        if not self.stubborn:
            self.returncode = -15

    def kill(self):
        self.calls.append("kill")
        self.returncode = -9

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("fake", timeout)
        return self.returncode


def test_wait_healthy_polls_until_the_probe_answers():
    answers = iter([False, False, True])
    proc = FakeProc()
    wait_healthy(proc, "http://x/health", 60, probe=lambda _url: next(answers), sleep=lambda _s: None)
    assert proc.polls == 3


def test_wait_healthy_fails_fast_when_the_process_dies():
    with pytest.raises(ServeError, match="exited with code 1"):
        wait_healthy(FakeProc(exit_after=2), "u", 60, probe=lambda _u: False, sleep=lambda _s: None)


def test_wait_healthy_times_out_on_a_fake_clock():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(ServeError, match="not healthy"):
        wait_healthy(FakeProc(), "u", 5, probe=lambda _u: False, sleep=sleep, clock=lambda: now[0])
    assert now[0] >= 5


def test_stop_process_escalates_to_kill():
    polite, stubborn = FakeProc(), FakeProc(stubborn=True)
    assert stop_process(polite, grace_s=0.01) == -15 and polite.calls == ["terminate"]
    assert stop_process(stubborn, grace_s=0.01) == -9 and stubborn.calls == ["terminate", "kill"]


def test_managed_process_stops_a_real_child_on_error(tmp_path):
    with FakeOpenAIServer() as health:
        with pytest.raises(RuntimeError):
            with serve.managed_process(["sleep", "60"], health.base_url + "/models", name="sleeper",
                                       log_path=tmp_path / "s.log") as proc:
                raise RuntimeError("body failed")
    assert proc.poll() is not None  # the child is gone


def test_save_thunderagent_state(tmp_path):
    with FakeOpenAIServer() as ta:
        ta.programs = {"programs": [{"program_id": "m:i:1", "state": "released"}]}
        ta.profiles = {"profiles": [{"program_id": "m:i:1", "tokens": 42}]}
        saved = save_thunderagent_state(ta.base_url, tmp_path)
        paths = {r["path"] for r in ta.requests}
    assert saved == {"programs": True, "profiles": True}
    assert paths == {"/programs", "/profiles"}  # no /v1 prefix
    assert json.loads((tmp_path / "thunderagent" / "programs.json").read_text()) == ta.programs
    assert json.loads((tmp_path / "thunderagent" / "profiles.json").read_text()) == ta.profiles


def test_save_thunderagent_state_when_down(tmp_path):
    with FakeOpenAIServer() as ta:
        url = ta.base_url
    assert save_thunderagent_state(url, tmp_path, timeout_s=1) == {"programs": False, "profiles": False}
    assert not (tmp_path / "thunderagent").exists()
