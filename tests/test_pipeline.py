"""The whole flow on bundled tasks with scripted models served by a local OpenAI-compatible test server:
params → runner → agent (shell or patch mode) → providers → predictions → local evaluation (swebench grading).
"""

from __future__ import annotations

import json

import pytest
import unidiff
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

from swelab import minibench
from swelab.evaluate.backends import evaluate_run
from swelab.generate import runner
from swelab.io import read_json, read_jsonl
from swelab.params import load_params
from swelab.sandbox import bwrap_available
from swelab.select.instances import resolve_instances, write_run_instances
from swelab.workspace.repos import Workspace

TASK = "minibench__textkit-1"


def edits_from_gold(patch: str) -> list[tuple[str, str, str]]:
    """(path, old text, new text) for each hunk: what a model would pass to str_replace."""
    edits = []
    for patched_file in unidiff.PatchSet(patch):
        for hunk in patched_file:
            old = "".join(line.value for line in hunk if not line.is_added)
            new = "".join(line.value for line in hunk if not line.is_removed)
            edits.append((patched_file.path, old, new))
    return edits


def tool_turn(calls: list[tuple[str, dict]], start: int) -> dict:
    tool_calls = [
        {"id": f"call_{start + i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for i, (name, args) in enumerate(calls)
    ]
    return ok(None, tool_calls=tool_calls, finish_reason="tool_calls")


def pipeline_params(tmp_path, server_url: str, kind: str) -> object:
    path = write_params(
        tmp_path,
        f"name: pipe\ndataset: minibench\ninstances: [{TASK}]\nattempts: 1\nworkers: 2\n"
        "models:\n"
        "  - {name: gold, kind: gold}\n"
        f"  - {{name: scripted, kind: {kind}, provider: vllm, model_id: scripted-model, base_url: '{server_url}',"
        " max_steps: 8}\n",
    )
    return load_params(path, environ={})


def run_and_grade(params, cache_dir) -> dict:
    rows = resolve_instances(params)
    write_run_instances(params.run_dir, rows)
    runner.generate(params, rows, progress=False)
    summaries = evaluate_run(params, workspace=Workspace(cache_dir), progress=False)
    return {f"{s['model']}__a{s['attempt']}": s for s in summaries}


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed (tests/ensure_bwrap.sh installs it)")
def test_a_scripted_tool_calling_conversation_fixes_a_bundled_task(tmp_path, cache_dir):
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    (path, old, new), = edits_from_gold(task["patch"])
    turns = [
        tool_turn([("search", {"pattern": "def truncate"})], 1),
        tool_turn([("read_file", {"path": path})], 2),
        tool_turn([("str_replace", {"path": path, "old_str": old, "new_str": new})], 3),
        tool_turn([("git_diff", {})], 4),
        tool_turn([("submit", {"summary": "fixed"})], 5),
    ]
    with FakeOpenAIServer(turns, default=ok("no more turns were scripted")) as server:
        params = pipeline_params(tmp_path, server.base_url, "shell")
        summaries = run_and_grade(params, cache_dir)
        sent = server.chat_requests()
    assert len(sent) == 5 and all(r["body"]["model"] == "scripted-model" for r in sent)
    assert summaries["scripted__a1"]["resolved"] == 1
    assert summaries["gold__a1"]["resolved"] == 1
    cell = read_json(params.run_dir / "cells" / "scripted" / TASK / "1.json")
    assert cell["status"] == "ok" and cell["mode"] == "shell" and cell["tool_calls"] == 5
    trajectory = read_jsonl(params.run_dir / "cells" / "scripted" / TASK / "1" / "trajectory.jsonl")
    assert len([row for row in trajectory if row.get("event") == "step"]) == 5
    calls = read_jsonl(params.run_dir / "cells" / "scripted" / TASK / "1" / "calls.jsonl")
    assert len(calls) == 5 and all(c["prompt_tokens"] is not None for c in calls)


def test_a_patch_mode_answer_is_extracted_checked_and_graded(tmp_path, cache_dir):
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    reply = f"Here is the fix.\n\n```diff\n{task['patch']}```\n"
    with FakeOpenAIServer([ok(reply)], default=ok("not a diff at all")) as server:
        params = pipeline_params(tmp_path, server.base_url, "patch")
        summaries = run_and_grade(params, cache_dir)
        prompt = server.chat_requests()[0]["body"]["messages"]
    assert summaries["scripted__a1"]["resolved"] == 1
    assert task["problem_statement"].strip()[:60] in json.dumps(prompt)
    cell = read_json(params.run_dir / "cells" / "scripted" / TASK / "1.json")
    assert cell["status"] == "ok" and cell["mode"] == "patch"
    assert cell["model_patch"].strip() == task["patch"].strip()


def test_a_reply_that_is_not_a_diff_is_malformed_not_wrong(tmp_path, cache_dir):
    with FakeOpenAIServer([], default=ok("I think you should change the truncate function.")) as server:
        params = pipeline_params(tmp_path, server.base_url, "patch")
        run_and_grade(params, cache_dir)
    cell = read_json(params.run_dir / "cells" / "scripted" / TASK / "1.json")
    assert cell["status"] == "malformed" and cell["model_patch"] == ""


def test_through_thunderagent_every_request_names_its_program_and_the_state_is_saved(tmp_path, cache_dir):
    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    with FakeOpenAIServer([], default=ok(f"```diff\n{task['patch']}```")) as server:
        path = write_params(
            tmp_path,
            f"name: ta\ndataset: minibench\ninstances: [{TASK}]\nattempts: 3\n"
            f"models:\n  - {{name: routed, kind: patch, provider: thunderagent, model_id: m,"
            f" base_url: '{server.base_url}'}}\n"
        )
        params = load_params(path, environ={})
        rows = resolve_instances(params)
        runner.generate(params, rows, progress=False)
        programs = [r["body"]["program_id"] for r in server.chat_requests()]
        releases = list(server.releases)
    assert len(programs) == 3 and len(set(programs)) == 3  # one program per (model, instance, attempt)
    assert sorted(releases) == sorted(programs)  # each released exactly once
    assert (params.run_dir / "thunderagent" / "programs.json").exists()
    assert (params.run_dir / "thunderagent" / "profiles.json").exists()


def test_each_attempt_samples_with_its_own_seed(tmp_path, cache_dir):
    with FakeOpenAIServer([], default=ok("no diff")) as server:
        params = pipeline_params(tmp_path, server.base_url, "patch")
        params = load_params(params.source_file, overrides={"attempts": 3}, environ={})
        runner.generate(params, resolve_instances(params), progress=False)
        seeds = sorted(r["body"]["seed"] for r in server.chat_requests())
    assert seeds == [0, 1, 2]


def test_128_concurrent_programs_neither_starve_nor_clash(tmp_path, cache_dir):
    with FakeOpenAIServer([], default=ok("no diff here")) as server:
        # proof of concurrency: no request is answered until all 128 workers' requests are in flight at once
        # (a generous bound, and an attempt timeout above it, so a loaded machine is only slower)
        server.hold_until_in_flight(128, timeout_s=300)
        path = write_params(
            tmp_path,
            "name: wide\ndataset: minibench\nattempts: 13\nworkers: 128\nattempt_timeout_s: 900\n"
            f"models:\n  - {{name: routed, kind: patch, provider: thunderagent, model_id: m,"
            f" base_url: '{server.base_url}', options: {{max_retries: 0}}}}\n"
        )
        params = load_params(path, environ={})
        rows = resolve_instances(params)
        summary = runner.generate(params, rows, progress=False)
        programs = [r["body"]["program_id"] for r in server.chat_requests()]
        releases = list(server.releases)
    assert server.barrier_error is None, server.barrier_error  # the requests really were in flight together
    assert summary["ran"] == 130 and summary["by_status"] == {"malformed": 130}
    assert len(set(programs)) == 130 and sorted(releases) == sorted(programs)
    cells = list((params.run_dir / "cells" / "routed").rglob("*.json"))
    assert len(cells) == 130 and all(json.loads(c.read_text())["status"] == "malformed" for c in cells)
    lines = [read_jsonl(p) for p in (params.run_dir / "cells" / "routed").rglob("calls.jsonl")]
    assert len(lines) == 130 and all(len(rows_) == 1 for rows_ in lines)


def test_a_run_under_30_percent_injected_faults_completes_with_every_reason_recorded(tmp_path, cache_dir):
    import random
    import threading

    from fake_openai_server import error, hang, truncated

    task = next(t for t in minibench.load_tasks() if t["instance_id"] == TASK)
    rng, lock, seen = random.Random(7), threading.Lock(), []
    faults = [lambda: error(429, "slow down", headers={"Retry-After": "0"}), lambda: error(500, "boom"),
              hang, truncated]  # hang: answered only when the server stops, so the 0.5 s timeout always fires

    def responder(request: dict) -> dict:
        with lock:
            seen.append(request)
            if len(seen) >= 40:  # late in the run the model disappears for good: the rest is skipped, with the reason
                return error(404, "no such model", code="model_not_found")
            if rng.random() < 0.3:
                return faults[rng.randrange(len(faults))]()
        return ok(f"```diff\n{task['patch']}```")

    with FakeOpenAIServer([], responder=responder) as server:
        path = write_params(
            tmp_path,
            f"name: faults\ndataset: minibench\ninstances: [{TASK}]\nattempts: 30\nworkers: 8\n"
            f"models:\n  - {{name: flaky, kind: patch, provider: thunderagent, model_id: m,"
            f" base_url: '{server.base_url}', options: {{request_timeout_s: 0.5, max_retries: 2,"
            " backoff_base_s: 0.01}}\n"
        )
        params = load_params(path, environ={})
        summary = runner.generate(params, resolve_instances(params), progress=False)
        programs = {r["body"]["program_id"] for r in server.chat_requests()}
        releases = list(server.releases)
    assert summary["planned"] == 30 and sum(summary["by_status"].values()) == 30  # the run completed
    assert sorted(releases) == sorted(programs)  # every program that spoke was released exactly once
    cells = [read_json(p) for p in (params.run_dir / "cells" / "flaky" / TASK).glob("*.json")]
    assert len(cells) == 30 and {"ok", "skipped"} <= {c["status"] for c in cells}
    assert "model_not_found" in summary["skipped_models"]["flaky"]
    for cell in cells:
        if cell["status"] != "ok":
            assert cell["error_kind"] and cell["error"], cell  # the reason is recorded, never blank
    rows = [row for p in (params.run_dir / "cells" / "flaky" / TASK).rglob("calls.jsonl") for row in read_jsonl(p)]
    reasons = {row["error_kind"] for row in rows} | {kind for row in rows for kind in row["retried_for"]}
    # every injected kind shows up, whether the call failed for it or was retried past it
    assert {"rate_limited", "server_error", "timeout", "bad_response", "model_not_found"} <= reasons, reasons
