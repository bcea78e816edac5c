"""Providers against a local fault-injecting OpenAI-compatible server: retries, normalized errors,
calls.jsonl, ThunderAgent program_id/release semantics, and no secret in any written file."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai_server import FakeOpenAIServer, error, hang, ok, truncated

from swelab.generate.providers import ProviderError, open_program, program_id_for, redact
from swelab.generate.providers.profiles import PROFILES, resolve_endpoint, server_root
from swelab.params import ModelConfig
from swelab.registry import PROVIDERS

FAKE_KEY = "sk-test-SECRET-0123456789abcdef"


def model(base_url: str, provider: str = "vllm", **kw) -> ModelConfig:
    options = {"backoff_base_s": 0.0, "backoff_cap_s": 0.0, **kw.pop("options", {})}
    return ModelConfig(name=kw.pop("name", "org/fake-model"), kind="patch", provider=provider,
                       model_id="fake-model", base_url=base_url, options=options, **kw)


def read_calls(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "calls.jsonl").read_text().splitlines()]


def no_sleep(_seconds: float) -> None:
    pass


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def test_success_records_provider_usage_and_sends_uniform_fields(server, tmp_path):
    server.push(ok("hello", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
                                   "prompt_tokens_details": {"cached_tokens": 5},
                                   "completion_tokens_details": {"reasoning_tokens": 2}}))
    cfg = model(server.base_url, temperature=0.3, max_output=77, seed=9)
    with open_program(cfg, tmp_path, "astropy__astropy-1", 1) as client:
        result = client.complete([{"role": "user", "content": "hi"}])
        totals = client.totals()
    assert result.message == {"role": "assistant", "content": "hello", "tool_calls": []}
    assert result.finish_reason == "stop"
    body = server.chat_requests()[0]["body"]
    sent = (body["model"], body["temperature"], body["max_tokens"], body["seed"])
    assert sent == ("fake-model", 0.3, 77, 9)
    assert "program_id" not in body  # plain vLLM: no program semantics
    (row,) = read_calls(tmp_path)
    tokens = (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["reasoning_tokens"])
    assert tokens == (11, 3, 5, 2)
    assert row["cost_usd"] is None and row["error_kind"] is None and row["retries"] == 0
    assert row["program_id"].startswith("org-fake-model:astropy__astropy-1:1:")  # + this execution's tag
    assert row["latency_s"] >= 0 and row["ended_at"] >= row["started_at"]
    assert totals["n_calls"] == 1 and totals["prompt_tokens"] == 11


def test_streaming_records_time_to_first_token_and_assembles_the_message(server, tmp_path):
    call = {"id": "c9", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls -la"}'}}
    server.push(ok("streamed answer", tool_calls=[call], finish_reason="tool_calls"))
    with open_program(model(server.base_url, options={"stream": True}), tmp_path, "i", 1) as client:
        result = client.complete([{"role": "user", "content": "hi"}])
    assert result.message == {"role": "assistant", "content": "streamed answer", "tool_calls": [call]}
    assert result.finish_reason == "tool_calls"
    body = server.chat_requests()[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    (row,) = read_calls(tmp_path)
    assert row["ttft_s"] is not None and 0 <= row["ttft_s"] <= row["latency_s"]
    assert row["prompt_tokens"] is not None and row["completion_tokens"] is not None


def test_unreported_usage_is_counted_and_says_so(server, tmp_path):
    server.push(ok("x", usage=None))
    with open_program(model(server.base_url), tmp_path, "i", 1) as client:
        client.complete([{"role": "user", "content": "hi"}])
        totals = client.totals()
    (row,) = read_calls(tmp_path)
    assert row["token_source"] == "approx"  # the fake server has no tokenize route: chars/4
    assert (row["prompt_tokens"], row["completion_tokens"]) == (8, 1)
    assert totals["prompt_tokens"] == 8 and totals["n_calls"] == 1


def test_tool_calls_come_back_as_plain_dicts(server, tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
    server.push(ok(None, tool_calls=[call], finish_reason="tool_calls"))
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    with open_program(model(server.base_url), tmp_path, "i", 1) as client:
        result = client.complete([{"role": "user", "content": "go"}], tools=tools)
    assert result.message["tool_calls"] == [call]
    assert result.finish_reason == "tool_calls"
    assert server.chat_requests()[0]["body"]["tools"] == tools


def test_429_retry_after_is_honoured_then_succeeds(server, tmp_path):
    server.push(error(429, "slow down", headers={"Retry-After": "7"}), error(500, "boom"), ok("fine"))
    waits: list[float] = []
    with open_program(model(server.base_url), tmp_path, "i", 1, sleep=waits.append) as client:
        result = client.complete([{"role": "user", "content": "hi"}])
    assert result.message["content"] == "fine"
    assert waits[0] >= 7.0  # Retry-After is a floor for the backoff
    assert len(waits) == 2
    (row,) = read_calls(tmp_path)
    assert row["retries"] == 2 and row["error_kind"] is None
    assert row["retried_for"] == ["rate_limited", "server_error"]  # why it was retried, in order


def test_backoff_grows_exponentially_with_jitter(server, tmp_path):
    server.push(*[error(502, "bad gateway")] * 4, ok())
    waits: list[float] = []
    cfg = model(server.base_url, options={"backoff_base_s": 1.0, "backoff_cap_s": 100.0, "max_retries": 4})
    with open_program(cfg, tmp_path, "i", 1, sleep=waits.append, rng=random.Random(1)) as client:
        client.complete([{"role": "user", "content": "hi"}])
    assert len(waits) == 4
    assert all(0 <= w <= 2**i for i, w in enumerate(waits))  # full jitter under the exponential cap
    assert len(set(waits)) == 4  # jittered, not constant


@pytest.mark.parametrize(
    ("reply", "kind", "calls"),
    [
        (error(404, "The model `x` does not exist", code="model_not_found"), "model_not_found", 1),
        (error(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"),
         "context_length", 1),
        (error(401, "invalid key"), "auth", 1),
        (error(400, "bad field"), "bad_request", 1),
        (error(500, "internal"), "server_error", 3),
        (error(503, "No instances available"), "unavailable", 3),
        (error(429, "too many", headers={"Retry-After": "0"}), "rate_limited", 3),
        (truncated(), "bad_response", 3),
    ],
)
def test_errors_are_normalized_and_retried_only_when_transient(server, tmp_path, reply, kind, calls):
    server.default = reply
    cfg = model(server.base_url, options={"max_retries": 2})
    with open_program(cfg, tmp_path, "i", 1, sleep=no_sleep) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}])
    assert info.value.kind == kind
    assert len(server.chat_requests()) == calls
    (row,) = read_calls(tmp_path)
    assert row["error_kind"] == kind and row["retries"] == calls - 1


def test_timeout_is_retried_and_never_passes_the_deadline(server, tmp_path):
    server.default = hang()  # answers only when the server stops: the timeout fires first
    cfg = model(server.base_url, options={"request_timeout_s": 0.3, "max_retries": 1})
    with open_program(cfg, tmp_path, "i", 1, sleep=no_sleep) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}])
    assert info.value.kind == "timeout" and info.value.retries == 1
    # a deadline already too close: no request is sent at all
    n_before = len(server.chat_requests())
    with open_program(cfg, tmp_path / "b", "i", 2) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}], deadline=time.monotonic() + 0.1)
    assert info.value.kind == "timeout"
    assert len(server.chat_requests()) == n_before


def test_backoff_that_would_cross_the_deadline_fails_at_once(server, tmp_path):
    server.default = error(429, "wait", headers={"Retry-After": "3600"})
    waits: list[float] = []
    with open_program(model(server.base_url), tmp_path, "i", 1, sleep=waits.append) as client:
        with pytest.raises(ProviderError) as info:
            client.complete([{"role": "user", "content": "hi"}], deadline=time.monotonic() + 30)
    assert info.value.kind == "rate_limited" and waits == []


def test_connection_refused_is_unavailable(tmp_path):
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    cfg = model(url, options={"max_retries": 1})
    with open_program(cfg, tmp_path, "i", 1, sleep=no_sleep) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}])
    assert info.value.kind == "unavailable"


# -- ThunderAgent programs -----------------------------------------------------------------------------

def test_thunderagent_program_id_on_every_request_and_one_release(server, tmp_path):
    cfg = model(server.base_url, provider="thunderagent")
    with open_program(cfg, tmp_path, "django__django-11099", 2) as client:
        for _ in range(3):
            client.complete([{"role": "user", "content": "step"}])
    pid = client.program_id
    assert pid.startswith(program_id_for("org/fake-model", "django__django-11099", 2) + ":")
    assert program_id_for("org/fake-model", "django__django-11099", 2) == "org-fake-model:django__django-11099:2"
    assert [r["body"]["program_id"] for r in server.chat_requests()] == [pid] * 3
    assert server.releases == [pid]
    release = [r for r in server.requests if r["path"] == "/programs/release"]
    assert len(release) == 1 and release[0]["body"] == {"program_id": pid}  # no /v1 prefix


@pytest.mark.parametrize("failure", ["exception", "provider_error", "timeout"])
def test_release_happens_exactly_once_when_the_attempt_fails(server, tmp_path, failure):
    options = {"request_timeout_s": 0.2, "max_retries": 0}
    cfg = model(server.base_url, provider="thunderagent", options=options)
    server.default = {"exception": ok(), "provider_error": error(500, "x"), "timeout": hang()}[failure]
    with pytest.raises((RuntimeError, ProviderError)):
        with open_program(cfg, tmp_path, "inst", 1) as client:
            client.complete([{"role": "user", "content": "hi"}])
            raise RuntimeError("agent crashed")
    assert server.releases == [client.program_id]


def test_every_execution_of_an_attempt_is_a_new_program(server, tmp_path):
    # a redo (force, or a resumed run) must never reuse a program id the router already saw released
    cfg = model(server.base_url, provider="thunderagent")
    ids = []
    for _ in range(2):
        with open_program(cfg, tmp_path, "inst", 1) as client:
            client.complete([{"role": "user", "content": "hi"}])
        ids.append(client.program_id)
    assert len(set(ids)) == 2 and server.releases == ids


def test_concurrent_programs_each_release_once(server, tmp_path):
    cfg = model(server.base_url, provider="thunderagent")

    def attempt(i: int) -> str:
        with open_program(cfg, tmp_path / str(i), f"inst-{i}", 1) as client:
            client.complete([{"role": "user", "content": str(i)}])
            return client.program_id

    with ThreadPoolExecutor(16) as pool:
        pids = list(pool.map(attempt, range(32)))
    assert sorted(server.releases) == sorted(pids) and len(set(pids)) == 32
    for req in server.chat_requests():
        i = int(req["body"]["messages"][0]["content"])
        assert req["body"]["program_id"] == pids[i]


class BarrierClient:
    """An `openai.OpenAI` stand-in whose calls wait until `parties` calls are in flight at once."""

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=10)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs):
        self.barrier.wait()  # raises BrokenBarrierError if the calls were serialized
        message = {"role": "assistant", "content": "together"}
        return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason="stop")], usage=None)


def test_max_concurrency_is_the_runners_gate_not_the_clients(tmp_path):
    # one gate only: the runner's semaphore, taken before the attempt's clock starts (tests/test_runner.py)
    cfg = model("http://127.0.0.1:9/v1", options={"max_concurrency": 1, "max_retries": 0})
    fake = BarrierClient(2)

    def attempt(i: int) -> str:
        with open_program(cfg, tmp_path / str(i), f"i{i}", 1, openai_client=fake) as client:
            return client.complete([{"role": "user", "content": "x"}]).message["content"]

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(attempt, range(2))) == ["together", "together"]


def test_server_root_drops_v1():
    assert server_root("http://h:9000/v1") == "http://h:9000"
    assert server_root("http://h:9000/v1/") == "http://h:9000"
    assert server_root("http://h:9000") == "http://h:9000"


# -- fault injection over a batch ----------------------------------------------------------------------

def test_batch_with_30_percent_faults_completes_with_reasons(server, tmp_path):
    rng = random.Random(42)
    faults = [
        lambda: error(429, "rate", headers={"Retry-After": "0"}),
        lambda: error(500, "boom"),
        hang,
        truncated,
        lambda: error(404, "no such model", code="model_not_found"),
    ]
    lock = __import__("threading").Lock()

    def responder(_request: dict) -> dict:
        with lock:
            if rng.random() < 0.3:
                return faults[rng.randrange(len(faults))]()
        return ok("diff")

    server.responder = responder
    options = {"request_timeout_s": 0.3, "max_retries": 2}
    cfg = model(server.base_url, provider="thunderagent", options=options)
    outcomes: dict[int, str] = {}

    def attempt(i: int) -> None:
        with open_program(cfg, tmp_path / f"a{i}", f"inst-{i}", 1, sleep=no_sleep) as client:
            try:
                for _ in range(3):
                    client.complete([{"role": "user", "content": "x"}])
                outcomes[i] = "ok"
            except ProviderError as exc:
                outcomes[i] = exc.kind

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(attempt, range(40)))
    assert len(outcomes) == 40  # every attempt finished, none hung or crashed
    assert len(server.releases) == 40 and len(set(server.releases)) == 40
    rows = [row for i in range(40) for row in read_calls(tmp_path / f"a{i}")]
    kinds = {row["error_kind"] for row in rows}
    assert None in kinds and kinds - {None} <= {"rate_limited", "server_error", "timeout", "bad_response",
                                                "model_not_found"}
    assert any(row["retries"] > 0 for row in rows)  # faults were retried
    failed = {i for i, kind in outcomes.items() if kind != "ok"}
    for i in failed:  # each failed attempt's reason is in its calls.jsonl
        assert read_calls(tmp_path / f"a{i}")[-1]["error_kind"] == outcomes[i]


# -- secrets -------------------------------------------------------------------------------------------

def test_no_api_key_in_any_written_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CHUTES_API_KEY", FAKE_KEY)
    # the server echoes the Authorization header into its error message: the worst case
    def responder(request: dict) -> dict:
        if len(server.chat_requests()) % 2:
            return error(500, f"upstream rejected {request['headers'].get('authorization')}")
        return ok(f"token was {request['headers'].get('authorization')}")

    server.responder = responder
    cfg = ModelConfig(name="chutes-model", kind="patch", provider="chutes", model_id="m",
                      base_url=server.base_url, options={"max_retries": 0})
    for i in range(4):
        with open_program(cfg, tmp_path / str(i), "inst", i) as client:
            try:
                client.complete([{"role": "user", "content": "hi"}])
            except ProviderError as exc:
                assert FAKE_KEY not in str(exc)
    auth = {r["headers"].get("authorization") for r in server.chat_requests()}
    assert auth == {f"Bearer {FAKE_KEY}"}  # the key was really sent...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for path in written:  # ...and never written
        assert FAKE_KEY not in path.read_text(), path


def test_missing_key_for_hosted_provider_is_auth_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    cfg = ModelConfig(name="or", kind="patch", provider="openrouter", model_id="openai/gpt-oss-20b")
    with open_program(cfg, tmp_path, "i", 1) as client, pytest.raises(ProviderError) as info:
        client.complete([{"role": "user", "content": "hi"}])
    assert info.value.kind == "auth" and "OPENROUTER_API_KEY" in info.value.message


def test_redact_removes_env_secrets_and_bearer_tokens(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-very-secret-value")
    text = redact("key or-very-secret-value and Authorization: Bearer abcdefghijkl123 and sk-abcdefghijk")
    for secret in ("or-very-secret-value", "abcdefghijkl123", "sk-abcdefghijk"):
        assert secret not in text


def test_profiles_resolve_hosted_urls_and_openrouter_cost_flag():
    chutes = resolve_endpoint(ModelConfig(name="a", kind="patch", provider="chutes", model_id="m"))
    assert chutes.base_url == "https://llm.chutes.ai/v1" and chutes.api_key_env == "CHUTES_API_KEY"
    router = resolve_endpoint(ModelConfig(name="b", kind="patch", provider="openrouter", model_id="m"))
    assert router.base_url == "https://openrouter.ai/api/v1"
    assert router.extra_body == {"usage": {"include": True}}
    with pytest.raises(ProviderError) as info:
        resolve_endpoint(ModelConfig(name="c", kind="patch", provider="vllm", model_id="m"))
    assert "base_url" in info.value.message


def test_local_without_base_url_is_unavailable_and_the_url_travels_in_the_entry():
    # the runner starts the embedded server and hands the agent a copy of the entry with base_url set;
    # there is no other way in (no module-level registry of local URLs)
    cfg = ModelConfig(name="tiny", kind="patch", provider="local", model_id="m")
    with pytest.raises(ProviderError) as info:
        resolve_endpoint(cfg)
    assert info.value.kind == "unavailable" and "embedded server is not running" in info.value.message
    served = dataclasses.replace(cfg, base_url="http://127.0.0.1:5555/v1/")
    assert resolve_endpoint(served).base_url == "http://127.0.0.1:5555/v1"


def test_profiles_are_the_registry_table():
    assert PROFILES is PROVIDERS
    assert {name for name, spec in PROVIDERS.items() if spec.requires_base_url} == {"vllm", "thunderagent"}


def test_openrouter_cost_is_recorded(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "cost": 0.0012}
    server.push(ok("x", usage=usage))
    cfg = ModelConfig(name="gpt", kind="patch", provider="openrouter", model_id="openai/gpt-5-mini",
                      base_url=server.base_url)
    with open_program(cfg, tmp_path, "i", 1) as client:
        client.complete([{"role": "user", "content": "hi"}])
    assert server.chat_requests()[0]["body"]["usage"] == {"include": True}
    assert read_calls(tmp_path)[0]["cost_usd"] == pytest.approx(0.0012)


def test_a_release_whose_connection_is_reset_is_sent_again(server, tmp_path):
    # a router under load can reset a connection before reading it: the program must still be released
    server.drop_releases = 2
    cfg = model(server.base_url, provider="thunderagent")
    with open_program(cfg, tmp_path, "inst", 1) as client:
        client.complete([{"role": "user", "content": "hi"}])
    assert server.releases == [client.program_id]
    assert client.release_status["ok"] is True
    assert server.drop_releases == 0


def test_a_release_answered_with_an_error_is_not_sent_again(server, tmp_path, monkeypatch):
    cfg = model(server.base_url, provider="thunderagent")
    sent = []

    def failing_urlopen(request, timeout):
        sent.append(request.full_url)
        raise urllib.error.HTTPError(request.full_url, 503, "busy", {}, None)

    with open_program(cfg, tmp_path, "inst", 1) as client:
        client.complete([{"role": "user", "content": "hi"}])
        monkeypatch.setattr(urllib.request, "urlopen", failing_urlopen)
    releases = [url for url in sent if url.endswith("/programs/release")]  # the profile is read first
    assert len(releases) == 1
    assert client.release_status == {"ok": False, "message": "HTTP 503"}
