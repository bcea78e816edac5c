"""No key in any file of a run folder, even when the endpoint echoes it back (issue 11, item 3).

A loopback server answers with the key of the Authorization header in its replies (the content, a tool call's
arguments, the command it asks for, so the command's output too); a whole run of each agent that calls a model
(patch, shell with tool calls and in text mode, mini-swe-agent both ways) must leave the key in no file of the
run folder. One case turns the trajectory writer's redaction off, to show the check would see a leak.
"""

from __future__ import annotations

import ast
import json
import threading
import uuid
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, ok
from scaffold import write_params

import swelab.generate.agents as agents_package
from swelab.generate import runner
from swelab.generate.agents import trajectory
from swelab.io import write_jsonl
from swelab.params import load_params
from swelab.sandbox import bwrap_available

SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
FIX = "sed -i '5s/return value/return high/' toy/core.py"  # line 5 of the toy's core.py: `return value`
GATEWAY_KEY_ENV = "SWELAB_TEST_GATEWAY_KEY"  # a model entry's own api_key_env (not a provider's variable)
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bwrap unusable here: run tests/ensure_bwrap.sh")


def _tool_call(number: int, name: str, arguments: dict) -> dict:
    return {"id": f"call_{number}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def _echoing_turns(kind: str, key: str, gold_patch: str) -> list[dict]:
    """The replies of one attempt, each carrying the key back: a first turn that fixes the bug (and echoes the
    key in its text, its arguments and its command's output), then the submission."""
    echo = f"echo {key}; {FIX}"
    if kind == "patch":
        return [ok(f"The gateway says {key}.\n```diff\n{gold_patch}```")]
    if kind == "shell-tools":
        return [ok(f"Looking ({key}).", tool_calls=[_tool_call(1, "bash", {"command": echo})],
                   finish_reason="tool_calls"),
                ok(None, tool_calls=[_tool_call(2, "submit", {"summary": f"fixed with {key}"})],
                   finish_reason="tool_calls")]
    if kind == "shell-text":
        return [ok(f"THOUGHT: {key}\n\n```bash\n{echo}\n```"), ok(f"THOUGHT: done\n\n```bash\necho {SUBMIT}\n```")]
    if kind == "mini-tools":
        return [ok(f"THOUGHT: {key}", tool_calls=[_tool_call(1, "bash", {"command": echo})],
                   finish_reason="tool_calls"),
                ok("THOUGHT: done", tool_calls=[_tool_call(2, "bash", {"command": f"echo {SUBMIT}"})],
                   finish_reason="tool_calls")]
    assert kind == "mini-text"
    return [ok(f"THOUGHT: {key}\n\n```mswea_bash_command\n{echo}\n```"),
            ok(f"THOUGHT: done\n\n```mswea_bash_command\necho {SUBMIT}\n```")]


def _model_entry(kind: str, url: str, key_source: str) -> str:
    agent = {"patch": "patch", "shell-tools": "shell", "shell-text": "shell", "mini-tools": "mini-swe-agent",
             "mini-text": "mini-swe-agent"}[kind]
    options = "max_retries: 0"
    if agent != "patch":
        options += ", use_environment: false"
        options += ", tool_calling: false" if kind.endswith("-text") else ""
    provider = "chutes" if key_source == "CHUTES_API_KEY" else f"vllm, api_key_env: {GATEWAY_KEY_ENV}"
    return (f"  - {{name: echoed, kind: {agent}, provider: {provider}, model_id: m, base_url: '{url}',"
            f" options: {{{options}}}}}\n")


def _run(tmp_path: Path, toy_repo, kind: str, key_source: str, key: str) -> tuple[Path, list[dict], list[str]]:
    """One attempt of `kind` through the runner against an echoing server: (run folder, chat requests, the keys
    the server saw)."""
    repo, instance = toy_repo
    write_jsonl(tmp_path / "toy.jsonl", [instance])
    turns, lock, seen = _echoing_turns(kind, key, instance["patch"]), threading.Lock(), []

    def responder(request: dict) -> dict:
        sent = request["headers"].get("authorization", "").removeprefix("Bearer ")
        with lock:
            seen.append(sent)
            index = len(seen) - 1
        reply = turns[min(index, len(turns) - 1)]
        return json.loads(json.dumps(reply).replace(key, sent))  # echo what was actually sent

    with FakeOpenAIServer(responder=responder) as server:
        path = write_params(
            tmp_path,
            f"name: secrets\ndataset: {tmp_path / 'toy.jsonl'}\nattempts: 1\nworkers: 1\nattempt_timeout_s: 300\n"
            f"repo_sources: {{toy/toy: {repo}}}\nmodels:\n{_model_entry(kind, server.base_url, key_source)}",
        )
        params = load_params(path, environ={})
        summary = runner.generate(params, [instance], progress=False)
        requests = server.chat_requests()
    assert summary["by_status"] == {"ok": 1}, summary
    return params.run_dir, requests, seen


def _files_holding(run_dir: Path, key: str) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and key.encode() in p.read_bytes())


CASES = [  # (agent kind, where the key comes from)
    ("patch", "CHUTES_API_KEY"),
    ("shell-tools", GATEWAY_KEY_ENV),
    ("shell-text", "CHUTES_API_KEY"),
    ("mini-tools", GATEWAY_KEY_ENV),
    ("mini-text", "CHUTES_API_KEY"),
]


@pytest.mark.parametrize(("kind", "key_source"), CASES)
def test_an_echoed_key_is_in_no_file_of_the_run_folder(kind, key_source, tmp_path, toy_repo, cache_dir, monkeypatch):
    if kind != "patch" and not bwrap_available():
        pytest.skip("bwrap unusable here: run tests/ensure_bwrap.sh")
    key = f"Zq9{uuid.uuid4().hex}SECRETxY"  # no sk-/cpk- prefix: only the key's value can redact it
    monkeypatch.setenv(key_source, key)
    run_dir, requests, seen = _run(tmp_path, toy_repo, kind, key_source, key)
    assert seen and set(seen) == {key}  # the key was sent, and every reply carried it back
    assert len(requests) == len(_echoing_turns(kind, key, toy_repo[1]["patch"]))
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "trajectory.jsonl" for p in written)
    if kind.startswith("mini"):
        assert any(p.name == trajectory.MINI_TRAJECTORY for p in written)
    assert _files_holding(run_dir, key) == []
    rows = [json.loads(line) for p in run_dir.rglob("trajectory.jsonl") for line in p.read_text().splitlines()]
    assert "[REDACTED]" in json.dumps(rows)  # the echoes were recorded, with the key taken out


@needs_bwrap
@pytest.mark.parametrize("kind", ["shell-tools", "mini-tools"])
def test_without_the_writers_redaction_the_check_sees_the_leak(kind, tmp_path, toy_repo, cache_dir, monkeypatch):
    key = f"Zq9{uuid.uuid4().hex}SECRETxY"
    monkeypatch.setenv(GATEWAY_KEY_ENV, key)
    monkeypatch.setattr(trajectory, "redact", lambda text, *args: str(text))
    run_dir, _, _ = _run(tmp_path, toy_repo, kind, GATEWAY_KEY_ENV, key)
    leaked = _files_holding(run_dir, key)
    assert any(name.endswith("trajectory.jsonl") for name in leaked), leaked
    if kind == "mini-tools":
        assert any(name.endswith(trajectory.MINI_TRAJECTORY) for name in leaked), leaked


# Agent modules that still write a file of the attempt folder themselves: probe.py redacts its one reply by
# hand (the lead moves it onto trajectory.append_row; then this set is empty).
PENDING: set[str] = set()
RAW_WRITERS = {"append_jsonl", "write_json", "write_jsonl", "atomic_write_text", "atomic_write_bytes"}
ALLOWED = {"trajectory.py": RAW_WRITERS, "tools.py": {"atomic_write_text"}}  # tools: the model's own file edits


def test_agents_write_their_files_through_the_redacting_writer_only():
    folder = Path(agents_package.__file__).parent
    offenders = {}
    for module in sorted(folder.glob("*.py")):
        if module.name in PENDING:
            continue
        tree = ast.parse(module.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module == "swelab.io" for alias in node.names}
        imported |= {"swelab.io" for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names if alias.name == "swelab.io"}
        extra = imported - ALLOWED.get(module.name, set())
        if extra:
            offenders[module.name] = sorted(extra)
    assert offenders == {}, f"write trajectories with swelab.generate.agents.trajectory, not {offenders}"
