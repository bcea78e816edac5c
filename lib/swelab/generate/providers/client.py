"""One chat client for every provider: the `openai` package with its own retries turned off, our
retry loop (exponential backoff + jitter, Retry-After honoured, never past the attempt's deadline),
normalized errors, and one calls.jsonl line per call.

Every HTTP request (retries included) is charged to the run's request budget first (swelab.generate.budgets):
a provider whose day is spent gets no request, and the call fails as `budget_exhausted`. Every call's tokens
come from the provider, else the model's tokenizer, else an approximation (swelab.generate.tokens), and its
calls.jsonl line says which (`token_source`)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swelab.generate import budgets, tokens
from swelab.generate.providers.errors import Failure, ProviderError, classify, one_line, redact
from swelab.generate.providers.profiles import Endpoint, read_api_key
from swelab.io import append_jsonl
from swelab.rundir import USAGE_FIELDS

log = logging.getLogger(__name__)

MIN_REQUEST_TIMEOUT_S = 1.0  # below this a request cannot finish; treat the deadline as reached

_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_openai_client(base_url: str):
    """One `openai.OpenAI` per base URL, shared by all programs: its connection pool is thread-safe and
    128 concurrent programs should not open 128 pools. The key travels per request (read at call time)."""
    import openai

    with _CLIENTS_LOCK:
        client = _CLIENTS.get(base_url)
        if client is None:
            client = openai.OpenAI(base_url=base_url, api_key="unset", max_retries=0)
            _CLIENTS[base_url] = client
        return client


@dataclass
class ChatResult:
    message: dict  # the assistant message as a plain dict: role, content, tool_calls
    finish_reason: str | None
    usage: dict  # prompt/completion/cached/reasoning tokens and cost_usd; None where unreported
    reasoning: str | None = None  # reasoning_content when the provider returns it (kept out of message)
    token_source: str | None = None  # provider | tokenizer | approx: where usage's token counts came from


USAGE_KEYS = USAGE_FIELDS  # one tuple for the whole library: swelab.rundir owns it


def parse_usage(usage: Any) -> dict:
    """Provider-reported usage, normalized; a field the provider did not report stays None."""
    out: dict[str, Any] = dict.fromkeys(USAGE_KEYS)
    if usage is None:
        return out
    raw = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
    out["prompt_tokens"] = raw.get("prompt_tokens")
    out["completion_tokens"] = raw.get("completion_tokens")
    out["cached_tokens"] = (raw.get("prompt_tokens_details") or {}).get("cached_tokens")
    out["reasoning_tokens"] = (raw.get("completion_tokens_details") or {}).get("reasoning_tokens")
    cost = raw.get("cost")  # OpenRouter, with usage.include
    out["cost_usd"] = float(cost) if isinstance(cost, int | float) else None
    return out


def message_to_dict(message: Any) -> tuple[dict, str | None]:
    """The SDK's message object as the plain dict agents append to their history."""
    raw = message.model_dump() if hasattr(message, "model_dump") else dict(message)
    out: dict[str, Any] = {"role": raw.get("role") or "assistant", "content": raw.get("content")}
    calls = []
    for call in raw.get("tool_calls") or []:
        fn = call.get("function") or {}
        calls.append({
            "id": call.get("id"),
            "type": "function",
            "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or ""},
        })
    out["tool_calls"] = calls
    reasoning = raw.get("reasoning_content") or raw.get("reasoning")
    return out, reasoning if isinstance(reasoning, str) else None


class BudgetExhausted(ProviderError):
    """The provider's daily request budget is spent: the request was never sent. Its kind, `budget_exhausted`,
    is not a provider failure (nothing failed there); the runner ends the attempt `skipped` for a later rerun."""

    def __init__(self, message: str, retries: int = 0):
        # ProviderError accepts only the provider kinds of errors.ERROR_KINDS; this one is ours
        Exception.__init__(self, f"{budgets.BUDGET_EXHAUSTED}: {message}")
        self.kind = budgets.BUDGET_EXHAUSTED
        self.message = message
        self.retries = retries
        self.status = None


class ChatClient:
    """The interface every agent uses. One instance per program (model, instance, attempt)."""

    def __init__(
        self,
        model: Any,
        endpoint: Endpoint,
        calls_path: Path,
        instance_id: str,
        attempt: int,
        program_id: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        openai_client: Any | None = None,
    ):
        self.model = model
        self.endpoint = endpoint
        self.calls_path = Path(calls_path)
        self.instance_id = instance_id
        self.attempt = attempt
        self.program_id = program_id
        # options.max_concurrency is the runner's gate (taken before the attempt's clock starts), not ours
        options = model.options
        self.max_retries = options.max_retries
        self.backoff_base = float(options.backoff_base_s)
        self.backoff_cap = float(options.backoff_cap_s)
        self.request_timeout = float(options.request_timeout_s)
        self.stream = options.stream  # streaming gives time to first token
        self.provider = getattr(model, "provider", None)
        self.budget = budgets.current()  # the run's (set by the runner); None outside a run
        self.tokenizer = getattr(options, "tokenizer", None) or tokens.default_tokenizer(self.provider)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = openai_client or shared_openai_client(endpoint.base_url)
        self._lock = threading.Lock()
        self._call_index = 0
        self.release_status: dict | None = None  # ThunderAgent: set when the program is released
        self._totals: dict[str, Any] = {
            **dict.fromkeys(USAGE_KEYS), "n_calls": 0, "n_errors": 0, "retries": 0
        }

    # -- request -----------------------------------------------------------------------------------
    def _request_kwargs(self, messages: list[dict], tools: list[dict] | None, timeout: float) -> dict:
        model = self.model
        kwargs: dict[str, Any] = {
            "model": getattr(model, "model_id", None) or model.name,
            "messages": messages,
            "timeout": timeout,
        }
        if getattr(model, "temperature", None) is not None:
            kwargs["temperature"] = model.temperature
        if getattr(model, "max_output", None):
            kwargs["max_tokens"] = int(model.max_output)
        if getattr(model, "seed", None) is not None:
            # K attempts are K samples: each attempt gets its own seed, reproducible from the base seed.
            kwargs["seed"] = int(model.seed) + self.attempt - 1
        if tools:
            kwargs["tools"] = tools
        extra_body = dict(self.endpoint.extra_body)
        if self.endpoint.profile.programs:
            extra_body["program_id"] = self.program_id
        if extra_body:
            kwargs["extra_body"] = extra_body
        key = read_api_key(self.endpoint, getattr(model, "name", "?"))
        kwargs["extra_headers"] = {"Authorization": f"Bearer {key}"}
        return kwargs

    def _backoff(self, retry: int, failure: Failure) -> float:
        """Full-jitter exponential backoff; a server's Retry-After is a floor, never cut short."""
        delay = self._rng.uniform(0, min(self.backoff_cap, self.backoff_base * (2**retry)))
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        return delay

    def complete(
        self, messages: list[dict], *, tools: list[dict] | None = None, deadline: float | None = None
    ) -> ChatResult:
        """One logical call: retried on transient failures, recorded once in calls.jsonl either way."""
        with self._lock:
            self._call_index += 1
            call_index = self._call_index
        started_wall = time.time()
        started = time.monotonic()
        retries = 0
        retried_for: list[str] = []  # the kind of every failure that was retried, in order
        attempt_latency: float | None = None
        ttft: float | None = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining < MIN_REQUEST_TIMEOUT_S:
                failure = Failure("timeout", "attempt deadline reached before the call could finish", False)
                break
            timeout = self.request_timeout if remaining is None else min(self.request_timeout, remaining)
            try:
                kwargs = self._request_kwargs(messages, tools, timeout)
            except ProviderError as exc:  # e.g. missing key: not retryable
                failure = Failure(exc.kind, exc.message, False)
                break
            if self.budget is not None and not self.budget.charge(self.provider):
                failure = Failure(budgets.BUDGET_EXHAUSTED, self.budget.why(self.provider), False)
                break
            t0 = time.monotonic()
            try:
                if self.stream:
                    result, ttft = self._stream(kwargs, t0)
                else:
                    result = self._to_result(self._client.chat.completions.create(**kwargs))
                attempt_latency = time.monotonic() - t0
            except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes raw
                attempt_latency = time.monotonic() - t0
                failure = classify(exc)
            else:
                self._record(call_index, started_wall, started, attempt_latency, retries, result, None, ttft,
                             retried_for, messages=messages, tools=tools)
                return result
            if not failure.retryable or retries >= self.max_retries:
                break
            delay = self._backoff(retries, failure)
            if deadline is not None and time.monotonic() + delay + MIN_REQUEST_TIMEOUT_S > deadline:
                break  # waiting would cross the deadline: fail now with the real cause
            log.debug("retry %d of %s after %s (%.1fs)", retries + 1, self.program_id, failure.kind, delay)
            self._sleep(delay)
            retries += 1
            retried_for.append(failure.kind)
        self._record(call_index, started_wall, started, attempt_latency, retries, None, failure, None, retried_for)
        if failure.kind == budgets.BUDGET_EXHAUSTED:
            raise BudgetExhausted(failure.message, retries)
        raise ProviderError(failure.kind, failure.message, retries, status=failure.status)

    def _stream(self, kwargs: dict, t0: float) -> tuple[ChatResult, float | None]:
        """Accumulate a streamed completion (content, reasoning, tool-call fragments, final usage)."""
        import openai

        stream = self._client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict] = {}
        finish_reason = None
        usage = None
        ttft = None
        try:
            for chunk in stream:
                if time.monotonic() - t0 > kwargs["timeout"]:  # the SDK's timeout is per read, not total
                    raise openai.APITimeoutError(request=getattr(stream.response, "request", None))
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    delta = choice.delta.model_dump() if choice.delta is not None else {}
                    think = delta.get("reasoning_content") or delta.get("reasoning")
                    if ttft is None and (delta.get("content") or delta.get("tool_calls") or think):
                        ttft = time.monotonic() - t0
                    if delta.get("content"):
                        content.append(delta["content"])
                    if isinstance(think, str):
                        reasoning.append(think)
                    for part in delta.get("tool_calls") or []:
                        slot = calls.setdefault(part.get("index") or 0, {
                            "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                        slot["id"] = part.get("id") or slot["id"]
                        fn = part.get("function") or {}
                        slot["function"]["name"] += fn.get("name") or ""
                        slot["function"]["arguments"] += fn.get("arguments") or ""
                    finish_reason = choice.finish_reason or finish_reason
        finally:
            stream.close()
        message = {"role": "assistant", "content": "".join(content) if content else None,
                   "tool_calls": [calls[i] for i in sorted(calls)]}
        return ChatResult(message, finish_reason, parse_usage(usage), "".join(reasoning) or None), ttft

    def _to_result(self, completion: Any) -> ChatResult:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise ValueError("response has no choices")
        choice = choices[0]
        if getattr(choice, "message", None) is None:
            raise ValueError("response choice has no message")
        message, reasoning = message_to_dict(choice.message)
        usage = parse_usage(getattr(completion, "usage", None))
        return ChatResult(message, choice.finish_reason, usage, reasoning)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _record(
        self,
        call_index: int,
        started_wall: float,
        started: float,
        latency: float | None,
        retries: int,
        result: ChatResult | None,
        failure: Failure | None,
        ttft: float | None,
        retried_for: list[str] | None = None,
        *,
        messages: list[dict] | None = None,
        tools: list[dict] | None = None,
    ) -> None:
        wall = time.monotonic() - started
        ended_at = started_wall + wall
        usage, token_source = dict.fromkeys(USAGE_KEYS), None
        if result is not None:
            # counted after the clock stopped: a tokenizer's time is not the call's
            usage, token_source = tokens.fill_usage(result.usage, self._counter, messages or [], tools,
                                                    result.message, result.reasoning)
            result.usage, result.token_source = usage, token_source
        row = {
            "model": getattr(self.model, "name", None),
            "instance_id": self.instance_id,
            "attempt": self.attempt,
            "program_id": self.program_id,
            "call_index": call_index,
            "started_at": started_wall,
            "ended_at": ended_at,
            "latency_s": latency,  # the last HTTP attempt
            "wall_s": wall,  # additive: includes retries and backoff
            "ttft_s": ttft,
            **usage,
            "token_source": token_source,
            "error_kind": failure.kind if failure else None,
            "error": one_line(redact(failure.message)) if failure else None,
            "http_status": failure.status if failure else None,
            "retries": retries,
            "retried_for": list(retried_for or []),
            "finish_reason": result.finish_reason if result else None,
        }
        with self._lock:
            self._totals["n_calls"] += 1
            self._totals["retries"] += retries
            if failure:
                self._totals["n_errors"] += 1
            for key in USAGE_KEYS:
                if usage.get(key) is not None:
                    self._totals[key] = (self._totals[key] or 0) + usage[key]
        append_jsonl(self.calls_path, row)

    def _counter(self) -> tokens.Counter:
        """The model's tokenizer, loaded on the first call that needs it (most providers report usage)."""
        headers = {}
        try:
            key = read_api_key(self.endpoint, getattr(self.model, "name", "?"))
            if key != "EMPTY":
                headers["Authorization"] = f"Bearer {key}"
        except ProviderError:
            pass  # no key: a self-served tokenizer route may not need one
        return tokens.counter_for(self.tokenizer, base_url=self.endpoint.base_url,
                                  model_id=getattr(self.model, "model_id", None), headers=headers)

    def totals(self) -> dict:
        """Summed usage over this program's calls (None where never reported) and call counts."""
        with self._lock:
            return dict(self._totals)
