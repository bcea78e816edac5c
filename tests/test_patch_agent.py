"""Patch mode: diff extraction and repair, path safety, dry-run application, retrieval, and the agent
end to end against the local fake OpenAI server in a tmp git repo."""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, error, ok

from swelab.generate.agents.base import AttemptContext
from swelab.generate.agents.diff_extract import clean_diff, extract_diff, prepare_patch
from swelab.params import ModelConfig

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
README = "Calculator\n==========\n\nAdds numbers.\n"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "ops.py").write_text(CALC)
    (root / "calc" / "__init__.py").write_text("")
    (root / "README.md").write_text(README)
    (root / "docs").mkdir()
    (root / "docs" / "notes.txt").write_text("multiplication table notes\n" * 5)
    git("init", "-q", cwd=root)
    git("add", ".", cwd=root)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=root)
    return root


GOOD = """--- a/calc/ops.py
+++ b/calc/ops.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""


def test_extract_fenced_diff_among_prose():
    reply = f"Here is the fix:\n\n```diff\n{GOOD}```\n\nThis changes the sign."
    assert extract_diff(reply) == GOOD


def test_extract_bare_diff_and_none():
    assert extract_diff("Sure.\n" + GOOD).startswith("--- a/calc/ops.py")
    assert extract_diff("I cannot help with that.") is None
    assert extract_diff("```python\nprint(1)\n```") is None


def test_extract_unterminated_fence():
    assert extract_diff("```diff\n" + GOOD) == GOOD


def test_clean_recounts_wrong_hunk_headers_and_adds_prefixes():
    wrong = GOOD.replace("@@ -1,2 +1,2 @@", "@@ -1,7 +1,9 @@").replace("a/calc", "calc").replace(
        "b/calc", "calc")
    cleaned = clean_diff(wrong)
    assert "@@ -1,2 +1,2 @@" in cleaned
    assert "--- a/calc/ops.py\n+++ b/calc/ops.py" in cleaned


def test_clean_shifts_new_start_by_earlier_hunks():
    two = ("--- a/f.py\n+++ b/f.py\n@@ -1,1 +1,1 @@\n a\n+b\n+c\n@@ -10,2 +10,2 @@\n x\n-y\n+z\n")
    cleaned = clean_diff(two)
    assert "@@ -1,1 +1,3 @@" in cleaned and "@@ -10,2 +12,2 @@" in cleaned


def test_clean_drops_prose_between_files_and_restores_empty_context():
    text = GOOD + "\nAnd also the readme:\n\n--- a/README.md\n+++ b/README.md\n@@ -1,4 +1,4 @@\n Calculator\n" \
        " ==========\n\n-Adds numbers.\n+Adds numbers correctly.\n"
    cleaned = clean_diff(text)
    assert "And also" not in cleaned
    assert "@@ -1,4 +1,4 @@\n Calculator\n ==========\n \n-Adds" in cleaned


def test_real_git_diff_with_index_lines_two_files_and_crlf(repo):
    readme = ("diff --git a/README.md b/README.md\nindex 1111111..2222222 100644\n--- a/README.md\n"
              "+++ b/README.md\n@@ -3,2 +3,2 @@ Calculator\n \n-Adds numbers.\n+Adds numbers correctly.\n")
    ops = "diff --git a/calc/ops.py b/calc/ops.py\nindex 3333333..4444444 100644\n" + GOOD
    reply = "Fix below.\r\n```diff\r\n" + (ops + readme).replace("\n", "\r\n") + "```\r\nDone. index of changes: 2"
    result = prepare_patch(reply, repo)
    assert result.ok, result.reason
    assert result.patch.count("diff --git") == 2 and "\r" not in result.patch
    assert "index of changes" not in result.patch
    subprocess.run(["git", "apply", "-"], cwd=repo, input=result.patch, text=True, check=True)
    assert "correctly" in (repo / "README.md").read_text()


def test_hunk_without_numbers_is_located_in_the_worktree(repo):
    loose = GOOD.replace("@@ -1,2 +1,2 @@", "@@ mul @@").replace(" def add", " def mul").replace(
        "return a - b", "return a * b").replace("return a + b", "return a ** b")
    result = prepare_patch(loose, repo)
    assert result.ok, result.reason
    assert "@@ -5,2 +5,2 @@" in result.patch


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.py", ".git/config", "calc/../../x.py"])
def test_paths_escaping_the_repo_are_refused(repo, path):
    evil = f"--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,1 @@\n-x\n+y\n".replace("a//", "/").replace("b//", "/")
    result = prepare_patch(evil, repo)
    assert not result.ok and "refused" in result.reason


def test_applicable_patch_is_accepted_and_really_applies(repo):
    result = prepare_patch(f"```diff\n{GOOD}```", repo)
    assert result.ok and result.method == "git apply"
    subprocess.run(["git", "apply", "-"], cwd=repo, input=result.patch, text=True, check=True)
    assert "return a + b" in (repo / "calc" / "ops.py").read_text()


def test_non_applicable_patch_is_malformed(repo):
    wrong_context = GOOD.replace("return a - b", "return a / b")
    result = prepare_patch(wrong_context, repo)
    assert not result.ok and result.reason.startswith("does not apply")
    assert not prepare_patch("no diff here", repo).ok


def test_new_file_diff(repo):
    new = "--- /dev/null\n+++ b/calc/sub.py\n@@ -0,0 +1,3 @@\n+def sub(a, b):\n+    return a - b\n"
    result = prepare_patch(new, repo)
    assert result.ok, result.reason
    assert "@@ -0,0 +1,2 @@" in result.patch


# -- retrieval -----------------------------------------------------------------------------------------

def test_bm25_context_ranks_relevant_code_within_budget(repo):
    from swelab.generate.agents.context import build_context

    ctx = build_context(repo, "add returns the wrong result: add(a, b) subtracts", mode="bm25",
                        budget_tokens=60)
    assert ctx.files[0] == "calc/ops.py"
    assert ctx.tokens <= 60
    assert "def add" in ctx.text


def test_oracle_context_uses_gold_patch_files(repo):
    from swelab.generate.agents.context import build_context

    gold = GOOD.replace("calc/ops.py", "README.md")
    ctx = build_context(repo, "anything", mode="oracle", budget_tokens=1000, gold_patch=gold)
    assert ctx.files == ["README.md"]
    assert "Calculator" in ctx.text


# -- the agent end to end ------------------------------------------------------------------------------

class TmpWorkspace:
    """The Workspace seam: a worktree of the tmp repo at its base commit."""

    def __init__(self, repo: Path):
        self.repo = repo

    @contextmanager
    def worktree(self, instance: dict):
        path = self.repo.parent / f"wt-{time.monotonic_ns()}"
        git("worktree", "add", "-q", "--detach", str(path), instance["base_commit"], cwd=self.repo)
        try:
            yield path
        finally:
            git("worktree", "remove", "--force", str(path), cwd=self.repo)


def make_instance(repo: Path) -> dict:
    return {"instance_id": "calc__calc-1", "repo": "calc/calc", "base_commit": git("rev-parse", "HEAD",
            cwd=repo).strip(), "problem_statement": "add(a, b) subtracts instead of adding", "patch": GOOD}


def run_agent(repo: Path, tmp_path: Path, server: FakeOpenAIServer, **cfg):
    from swelab.generate.agents.patch import PatchAgent

    model = ModelConfig(name="fake/coder", kind="patch", provider="vllm", model_id="coder",
                        base_url=server.base_url, context_budget_tokens=cfg.pop("budget", 500),
                        options={"max_retries": 0, **cfg.pop("options", {})}, **cfg)
    cell = tmp_path / "cell"
    ctx = AttemptContext(cell_dir=cell, attempt=1, deadline=time.monotonic() + 60, params=None,
                         workspace=TmpWorkspace(repo))
    return PatchAgent(model).run(make_instance(repo), ctx), cell


def test_agent_ok_patch_with_usage(repo, tmp_path):
    with FakeOpenAIServer([ok(f"```diff\n{GOOD}```")]) as server:
        outcome, cell = run_agent(repo, tmp_path, server)
        prompt = server.chat_requests()[0]["body"]["messages"][-1]["content"]
    assert outcome.status == "ok", outcome.error
    assert "return a + b" in outcome.model_patch
    assert outcome.n_calls == 1 and outcome.usage["prompt_tokens"] > 0
    assert "subtracts instead of adding" in prompt and "def add" in prompt
    assert len((cell / "calls.jsonl").read_text().splitlines()) == 1
    steps = [json.loads(line) for line in (cell / "trajectory.jsonl").read_text().splitlines()]
    assert [s["role"] for s in steps] == ["prompt", "assistant"]
    assert steps[0]["context_files"][0] == "calc/ops.py" and steps[1]["patch_ok"] is True


def test_agent_malformed_reply(repo, tmp_path):
    with FakeOpenAIServer([ok("I think you should change the sign.")]) as server:
        outcome, _ = run_agent(repo, tmp_path, server)
    assert outcome.status == "malformed" and outcome.model_patch == ""
    assert "no unified diff" in outcome.error


def test_agent_repair_round_feeds_back_the_error(repo, tmp_path):
    bad = GOOD.replace("return a - b", "return a / b")
    with FakeOpenAIServer([ok(bad), ok(GOOD)]) as server:
        outcome, _ = run_agent(repo, tmp_path, server, options={"repair_rounds": 1})
        second = server.chat_requests()[1]["body"]["messages"]
    assert outcome.status == "ok" and outcome.n_calls == 2
    assert "does not apply" in second[-1]["content"]


def test_agent_shrinks_the_context_when_the_prompt_is_too_long(repo, tmp_path):
    too_long = error(400, "This model's maximum context length is 100 tokens", code="context_length_exceeded")
    with FakeOpenAIServer([too_long, ok(GOOD)]) as server:
        outcome, cell = run_agent(repo, tmp_path, server, budget=40)
        sizes = [len(r["body"]["messages"][-1]["content"]) for r in server.chat_requests()]
    assert outcome.status == "ok" and outcome.n_calls == 2
    assert sizes[1] < sizes[0]
    prompts = [json.loads(x) for x in (cell / "trajectory.jsonl").read_text().splitlines()]
    budgets = [p["context_budget_tokens"] for p in prompts if p["role"] == "prompt"]
    assert budgets == [40, 20]


@pytest.mark.parametrize(("reply", "status", "kind"), [
    (error(404, "model gone", code="model_not_found"), "skipped", "model_not_found"),
    (error(400, "maximum context length exceeded", code="context_length_exceeded"), "provider_error",
     "context_length"),
    (error(500, "boom"), "provider_error", "server_error"),
])
def test_agent_provider_errors(repo, tmp_path, reply, status, kind):
    with FakeOpenAIServer(default=reply) as server:
        outcome, cell = run_agent(repo, tmp_path, server)
    assert (outcome.status, outcome.error_kind) == (status, kind)
    assert outcome.error
    assert json.loads((cell / "calls.jsonl").read_text().splitlines()[0])["error_kind"] == kind


def test_no_api_key_in_the_cell_files_of_an_agent_run(repo, tmp_path, monkeypatch):
    from swelab.generate.agents.patch import PatchAgent

    key = "cpk-fake-SECRET-abcdef0123456789"
    monkeypatch.setenv("CHUTES_API_KEY", key)
    with FakeOpenAIServer(responder=lambda req: ok(f"auth was {req['headers']['authorization']}")) as server:
        model = ModelConfig(name="chutes-coder", kind="patch", provider="chutes", model_id="coder",
                            base_url=server.base_url, options={"repair_rounds": 1})
        ctx = AttemptContext(cell_dir=tmp_path / "cell", attempt=1, deadline=time.monotonic() + 60, params=None,
                             workspace=TmpWorkspace(repo))
        outcome = PatchAgent(model).run(make_instance(repo), ctx)
        sent = server.chat_requests()[0]["headers"]["authorization"]
    assert sent == f"Bearer {key}"
    assert outcome.status == "malformed" and key not in (outcome.error or "")
    files = list((tmp_path / "cell").rglob("*"))
    assert {p.name for p in files} == {"calls.jsonl", "trajectory.jsonl"}
    for path in files:
        assert key not in path.read_text(), path
