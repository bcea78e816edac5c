"""`swelab run` end to end: the four notebooks through papermill, the report, the leaderboard, and no secret
in any file of the run — executed notebooks included."""

from __future__ import annotations

from pathlib import Path

from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

from swelab import minibench
from swelab.cli import main

SECRET = "sk-test-0123456789-do-not-leak"
TASK = "minibench__textkit-1"


def make_project(tmp_path: Path, base_url: str) -> Path:
    """A project folder with the real notebooks and a params file using a hosted-provider profile."""
    return write_params(
        tmp_path,
        f"name: e2e\ndataset: minibench\ninstances: [{TASK}, minibench__unitkit-1]\nattempts: 2\n"
        "models:\n"
        "  - {name: gold, kind: gold}\n"
        "  - {name: empty, kind: empty}\n"
        f"  - {{name: hosted/model, kind: patch, provider: chutes, model_id: hosted/model, base_url: '{base_url}'}}\n",
        notebooks=True,
    )


def test_swelab_run_executes_the_notebooks_and_leaks_no_key(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("CHUTES_API_KEY", SECRET)
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    # The hosted model fixes one task on its first attempt, then answers with prose (malformed).
    replies = [ok(f"```diff\n{task['patch']}```")]
    with FakeOpenAIServer(replies, default=ok(f"I cannot help; my key might be {SECRET[:6]}")) as server:
        params_file = make_project(tmp_path, server.base_url)
        assert main(["run", str(params_file)]) == 0
        sent = server.chat_requests()
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "outputs").iterdir())
    assert sent and all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in sent)
    for stage in ("01_select", "02_generate", "03_evaluate", "04_analyze"):
        assert (run_dir / "notebooks" / f"{stage}.ipynb").exists()
    assert (run_dir / "notebooks" / "04_analyze.html").exists()
    assert (run_dir / "report.html").stat().st_size > 100_000  # plotly.js embedded once
    assert "gold" in out and "hosted/model" in out
    board = (run_dir / "leaderboard.csv").read_text()
    gold = next(line for line in board.splitlines() if line.startswith("gold,"))
    empty = next(line for line in board.splitlines() if line.startswith("empty,"))
    assert ",1.0," in gold and ",0.0," in empty
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
