"""`swelab serve`: command lines, health wait and stop with fake processes, ThunderAgent state saving."""

from __future__ import annotations

import json
import subprocess

import pytest
from fake_openai_server import FakeOpenAIServer

from swelab.generate import serve
from swelab.generate.serve import (
    PROGRAM_PROFILE_FILE,
    ServeError,
    ServerProcess,
    describe_exit,
    save_thunderagent_state,
    stop_process,
    thunderagent_command,
    vllm_command,
    wait_healthy,
    watch,
)
from swelab.io import write_json


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
    bound = thunderagent_command(["http://a:8000"], port=9100, python="py", host="127.0.0.1", extra_args=())
    assert bound[-2:] == ["--host", "127.0.0.1"]
    with pytest.raises(ServeError):
        thunderagent_command([])


def test_serve_main_dry_run_prints_both_commands(capsys):
    assert serve.serve_main(["m/x", "--tp", "2", "--thunderagent", "--ta-port", "9001", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("vllm serve m/x --tensor-parallel-size 2")
    assert ("-m ThunderAgent --backends http://127.0.0.1:8000 --port 9001 --host 127.0.0.1 --backend-type vllm "
            "--router tr --metrics --profile --profile-dir ") in lines[1]
    assert lines[1].endswith("outputs/serve/thunderagent-profiles")  # the CSV stays with the logs


def test_serve_main_without_thunderagent_installed_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(serve, "thunderagent_available", lambda: False)
    assert serve.serve_main(["m/x", "--thunderagent", "--backends", "http://a/v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ThunderAgent is not installed" in err and len(err.splitlines()) == 1
    assert "git+https://github.com/ThunderAgent-org/ThunderAgent" in err and "--thunderagent-wheel" in err


def test_serve_main_with_a_wheel_that_is_not_there_says_so_in_one_line(capsys, tmp_path):
    wheel = tmp_path / "thunderagent-0.1.0-py3-none-any.whl"
    argv = ["m/x", "--thunderagent", "--thunderagent-wheel", str(wheel), "--backends", "http://a"]
    assert serve.serve_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"--thunderagent-wheel {wheel}: no such file" in err and len(err.splitlines()) == 1


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


def test_exit_statuses_are_spelled_out():
    assert describe_exit(3) == "code 3"
    assert describe_exit(-11) == "signal 11 (SIGSEGV)"
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(139) == "code 139 (128 + signal 11, SIGSEGV)"  # a shell's way of saying it


def test_a_server_process_says_how_it_died_with_its_last_log_lines(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading model\n\nwarming up\nFatal Python error: Segmentation fault\n")
    proc = FakeProc()
    server = ServerProcess("local model m", proc, "http://x/v1", log)
    assert server.crashed() is None
    proc.returncode = -11
    crash = server.crashed()
    assert crash == (f"local model m exited with signal 11 (SIGSEGV); last log lines: loading model | warming up | "
                     f"Fatal Python error: Segmentation fault (log {log})")
    assert ServerProcess("vllm", proc).crashed() == "vllm exited with signal 11 (SIGSEGV)"  # no log kept
    stopped = ServerProcess("m", proc, stopping=True)
    assert stopped.crashed() is None  # we stopped it: no crash


def test_watch_returns_when_a_server_dies():
    alive, dying = FakeProc(), FakeProc(exit_after=3)
    sleeps: list[float] = []
    crash = watch([ServerProcess("vllm", alive), ServerProcess("ThunderAgent", dying)], sleep=sleeps.append)
    assert crash == "ThunderAgent exited with code 1" and len(sleeps) >= 1


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
                                       log_path=tmp_path / "s.log") as server:
                assert server.crashed() is None and server.log_path == tmp_path / "s.log"
                raise RuntimeError("body failed")
    assert server.returncode() is not None  # the child is gone
    assert server.crashed() is None  # and that was our doing


def test_managed_process_reports_a_child_that_died_on_its_own(tmp_path):
    trigger = tmp_path / "crash-now"  # it dies when told, after it was found healthy
    script = f"echo starting; echo about to fail; while [ ! -e {trigger} ]; do sleep 0.05; done; kill -SEGV $$"
    with FakeOpenAIServer() as health:
        with serve.managed_process(["bash", "-c", script], health.base_url + "/models", name="crasher",
                                   log_path=tmp_path / "c.log") as server:
            assert server.crashed() is None
            trigger.touch()
            crash = server.crashed(wait_s=60)
    assert crash is not None and crash.startswith("crasher exited with signal 11 (SIGSEGV)")
    assert "starting | about to fail" in crash


def test_save_thunderagent_state(tmp_path):
    with FakeOpenAIServer() as ta:  # ThunderAgent's own shapes: objects keyed by program id
        ta.programs = {"m:i:1:a": {"backend": "http://b:8000", "state": "active", "step_count": 2}}
        ta.profiles = {"m:i:1:a": {"step_count": 2, "avg_prefill_s": 0.1}}
        saved = save_thunderagent_state(ta.base_url, tmp_path)
        paths = {r["path"] for r in ta.requests}
    assert saved == {"programs": True, "profiles": True}
    assert paths == {"/programs", "/profiles"}  # no /v1 prefix
    assert json.loads((tmp_path / "thunderagent" / "programs.json").read_text()) == ta.programs
    assert json.loads((tmp_path / "thunderagent" / "profiles.json").read_text()) == ta.profiles


def test_save_thunderagent_state_gathers_the_profiles_kept_at_release(tmp_path):
    # ThunderAgent drops a program's profile when it is released: the provider keeps it in the attempt folder
    attempt = tmp_path / "cells" / "m" / "i" / "1"
    write_json(attempt / PROGRAM_PROFILE_FILE, {"program_id": "m:i:1:a", "step_count": 3, "avg_pause_s": 0.5})
    write_json(tmp_path / "cells" / "m" / "j" / "1" / PROGRAM_PROFILE_FILE, ["not", "a", "profile"])
    with FakeOpenAIServer() as ta:
        ta.profiles = {"m:j:1:b": {"step_count": 1}}  # one program still open
        assert save_thunderagent_state(ta.base_url, tmp_path)["profiles"] is True
    profiles = json.loads((tmp_path / "thunderagent" / "profiles.json").read_text())
    assert profiles == {"m:i:1:a": {"step_count": 3, "avg_pause_s": 0.5}, "m:j:1:b": {"step_count": 1}}


@pytest.mark.parametrize("answer", [["a", "list"], "text", {"profiles": []}])
def test_save_thunderagent_state_keeps_an_unexpected_answer_aside(tmp_path, answer):
    with FakeOpenAIServer() as ta:
        ta.profiles = answer
        save_thunderagent_state(ta.base_url, tmp_path)
    assert json.loads((tmp_path / "thunderagent" / "profiles.json").read_text()) == {}
    assert json.loads((tmp_path / "thunderagent" / "profiles.unexpected.json").read_text()) == answer


def test_save_thunderagent_state_when_down(tmp_path):
    with FakeOpenAIServer() as ta:
        url = ta.base_url
    assert save_thunderagent_state(url, tmp_path, timeout_s=1) == {"programs": False, "profiles": False}
    assert not (tmp_path / "thunderagent").exists()
