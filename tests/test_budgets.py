"""Request budgets: a ledger per provider per UTC day shared by runs and processes; the client charges every
HTTP request, the runner stops starting attempts once the day is spent, and a rerun on a later day finishes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, error
from scaffold import write_params

from swelab.generate import budgets, runner
from swelab.generate.providers import open_program
from swelab.generate.providers.client import BudgetExhausted
from swelab.io import read_json, write_jsonl
from swelab.params import ModelConfig, ParamsError, load_params

DAY1 = dt.datetime(2025, 3, 1, 23, 59, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2025, 3, 2, 0, 1, tzinfo=dt.timezone.utc)


def test_the_ledger_never_passes_a_limit_under_concurrent_threads_and_processes(tmp_path):
    ledger = budgets.RequestLedger(tmp_path, clock=lambda: DAY1)
    results: list[bool] = []
    lock = threading.Lock()

    def charge() -> None:
        for _ in range(10):
            ok = ledger.add("chutes", limit=50)
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=charge) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results.count(True) == 50 and results.count(False) == 30
    assert ledger.count("chutes") == 50
    # two other processes add to the same file at once, unlimited: nothing is lost
    code = ("import datetime as dt, sys; from swelab.generate.budgets import RequestLedger; "
            f"l = RequestLedger(sys.argv[1], clock=lambda: dt.datetime({DAY1.year}, {DAY1.month}, {DAY1.day}, "
            "tzinfo=dt.timezone.utc)); [l.add('openrouter') for _ in range(25)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert ledger.count("openrouter") == 50
    assert read_json(tmp_path / "requests.json") == {"chutes": {"2025-03-01": 50}, "openrouter": {"2025-03-01": 50}}


def test_a_new_utc_day_starts_a_new_count(tmp_path):
    now = [DAY1]
    budget = budgets.RequestBudget({"chutes": 2, "vllm": None}, budgets.RequestLedger(tmp_path, clock=lambda: now[0]))
    assert budget.charge("chutes") and budget.charge("chutes") and not budget.charge("chutes")
    assert budget.exhausted("chutes") and budget.remaining("chutes") == 0
    assert budget.charge("vllm") and not budget.exhausted("vllm")  # no limit: not counted either
    now[0] = DAY2
    assert budget.remaining("chutes") == 2 and budget.charge("chutes")
    assert read_json(tmp_path / "requests.json") == {"chutes": {"2025-03-01": 2, "2025-03-02": 1}}


def test_retries_are_charged_and_a_spent_budget_sends_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CHUTES_API_KEY", "sk-test-0123456789")
    budget = budgets.RequestBudget({"chutes": 2}, budgets.RequestLedger(tmp_path / "ledger", clock=lambda: DAY1))
    with FakeOpenAIServer(default=error(500, "busy")) as server, budgets.active(budget):
        cfg = ModelConfig(name="c", kind="patch", provider="chutes", model_id="c", base_url=server.base_url,
                          options={"max_retries": 5, "backoff_base_s": 0.0, "backoff_cap_s": 0.0})
        with open_program(cfg, tmp_path, "i", 1) as client:
            with pytest.raises(BudgetExhausted) as caught:
                client.complete([{"role": "user", "content": "hi"}])
        assert len(server.chat_requests()) == 2  # the first try and one retry; the second retry was refused
    assert caught.value.kind == budgets.BUDGET_EXHAUSTED and caught.value.retries == 2
    (row,) = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert row["error_kind"] == "budget_exhausted" and row["retried_for"] == ["server_error", "server_error"]


def make_run(tmp_path: Path, toy_repo, base_url: str, limit: int):
    repo, instance = toy_repo
    rows = [dict(instance, instance_id=f"toy__toy-{i}") for i in (1, 2, 3)]
    write_jsonl(tmp_path / "toy.jsonl", rows)
    path = write_params(tmp_path, (
        f"name: budget\ndataset: {tmp_path / 'toy.jsonl'}\nattempts: 2\nworkers: 1\n"
        f"repo_sources: {{toy/toy: {repo}}}\nbudgets: {{chutes: {{requests_per_day: {limit}}}}}\nmodels:\n"
        f"  - {{name: cheap, kind: patch, provider: chutes, model_id: m, base_url: '{base_url}', "
        "options: {max_retries: 0}}\n"), "budget.yaml")
    return load_params(path, environ={}), rows


def test_a_budget_of_n_requests_stops_the_run_after_n_calls_and_a_later_day_finishes_it(
        tmp_path, toy_repo, cache_dir, monkeypatch, caplog):
    monkeypatch.setenv("CHUTES_API_KEY", "sk-test-0123456789")
    monkeypatch.setattr(budgets, "utc_now", lambda: DAY1)
    with FakeOpenAIServer() as server:
        params, rows = make_run(tmp_path, toy_repo, server.base_url, limit=3)
        first = runner.generate(params, rows, progress=False)
        assert len(server.chat_requests()) == 3
        assert first["by_status"].get("skipped") == 3 and sum(first["by_status"].values()) == 6
        skipped = [c for c in runner.RunLayout(params.run_dir).cells() if c.status == "skipped"]
        assert {c.error_kind for c in skipped} == {"budget_exhausted"}
        assert "a rerun on a later day" in skipped[0].error
        assert any("plans about 6" in r.getMessage() for r in caplog.records)  # warned before starting
        manifest = read_json(params.run_dir / "manifest.json")
        assert manifest["budgets"]["planned"] == {"chutes": 6}
        assert manifest["budgets"]["spent_today"] == {"chutes": 3}

        again = runner.generate(params, rows, progress=False)  # same day: nothing is sent
        assert again["ran"] == 3 and again["by_status"] == {"skipped": 3} and len(server.chat_requests()) == 3

        monkeypatch.setattr(budgets, "utc_now", lambda: DAY2)
        last = runner.generate(params, rows, progress=False)
        assert last["ran"] == 3 and "skipped" not in last["by_status"]
        assert len(server.chat_requests()) == 6
    ledger = read_json(cache_dir / "budgets" / "requests.json")
    assert ledger == {"chutes": {"2025-03-01": 3, "2025-03-02": 3}}


def test_budgets_in_params_are_validated_defaulted_and_kept_out_of_the_run_id(tmp_path):
    base = "name: b\nmodels:\n  - {name: gold, kind: gold}\n"
    plain = load_params(write_params(tmp_path, base, "b.yaml"), environ={})
    assert plain.budgets == {"chutes": {"requests_per_day": 2000}}
    tight = load_params(write_params(tmp_path, base + "budgets: {chutes: {requests_per_day: 5}}\n", "b.yaml"),
                        environ={})
    assert tight.budgets["chutes"]["requests_per_day"] == 5 and tight.run_id == plain.run_id
    for bad, field in (("budgets: {nowhere: {requests_per_day: 5}}", "budgets.nowhere"),
                       ("budgets: {chutes: {requests_per_day: 0}}", "budgets.chutes.requests_per_day"),
                       ("budgets: {chutes: {per_hour: 5}}", "budgets.chutes.per_hour")):
        with pytest.raises(ParamsError) as caught:
            load_params(write_params(tmp_path, base + bad + "\n", "b.yaml"), environ={})
        assert caught.value.field == field
