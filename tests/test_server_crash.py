"""A dead embedded server is a crash, not an unavailable model: the runner watches the server's process, and
when it dies mid-run the cell that met it says `server_crashed` (its signal and last log lines), the server's
log stays in outputs/<run_id>/logs/, and the model's later cells are skipped for the same reason.

The server here is tests/fake_openai_server.py run as a real process that segfaults on its third request
(what the AMX fault of issue 12 did to llama-cpp); tests/test_local_model.py kills the real one."""

from __future__ import annotations

import sys
from pathlib import Path

from scaffold import write_params

from swelab.generate import local_model, runner
from swelab.params import load_params
from swelab.rundir import RunLayout
from swelab.select.instances import resolve_instances

FAKE_SERVER = Path(__file__).with_name("fake_openai_server.py")
TASK = "minibench__textkit-1"


def test_a_server_that_dies_mid_run_ends_its_cells_as_server_crashed(tmp_path, cache_dir, monkeypatch):
    def fake_server_command(model_path, port, **_kwargs):
        return [sys.executable, str(FAKE_SERVER), "--port", str(port), "--crash-after", "2"]

    monkeypatch.setattr(local_model, "llama_server_command", fake_server_command)
    monkeypatch.setattr(local_model, "llama_cpp_available", lambda: True)
    path = write_params(
        tmp_path,
        f"name: crash\ndataset: minibench\ninstances: [{TASK}]\nattempts: 5\nworkers: 2\n"
        "models:\n  - {name: tiny, kind: patch, provider: local, model_id: tiny,"
        " options: {gguf: 'json:__init__.py', max_concurrency: 1, max_retries: 1, backoff_base_s: 0}}\n",
    )
    params = load_params(path, environ={})
    summary = runner.generate(params, resolve_instances(params), progress=False)

    layout = RunLayout(params.run_dir)
    cells = sorted(layout.cells(), key=lambda c: c.attempt)
    assert len(cells) == 5
    crashed = [c for c in cells if c.status == "error"]
    skipped = [c for c in cells if c.status == "skipped"]
    assert len(crashed) == 1 and crashed[0].error_kind == "server_crashed"  # the cell that met the crash
    reason = crashed[0].error
    assert "exited with signal 11 (SIGSEGV)" in reason and "crashing with SIGSEGV in request 3" in reason
    assert skipped and all(c.error_kind == "server_crashed" and reason in c.error for c in skipped)
    assert {c.status for c in cells} - {"error", "skipped"} <= {"ok", "malformed"}  # the two answered calls
    log = layout.server_log("tiny")
    assert log.is_file() and str(log) in reason  # kept where the reason says
    assert "chat request 3" in log.read_text()
    assert "server_crashed" in summary["skipped_models"]["tiny"]
