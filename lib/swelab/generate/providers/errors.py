"""Normalized provider errors: every failure of a model call ends as one `ProviderError` with a small,
fixed vocabulary of kinds, so the runner and the leaderboard can count failures by cause."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# The normalized kinds (docs/ARCHITECTURE.md, cell `error_kind`). `auth` and `bad_request` are additive:
# a rejected key or a malformed request is neither "unavailable" nor the model's fault.
ERROR_KINDS = (
    "rate_limited",
    "unavailable",
    "model_not_found",
    "context_length",
    "timeout",
    "bad_response",
    "server_error",
    "auth",
    "bad_request",
)
# Kinds worth another try after a pause; the rest fail the call at once.
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "timeout", "unavailable", "bad_response"})
# Kinds meaning "this model cannot be used now": the runner records the reason and skips the model.
SKIP_KINDS = frozenset({"unavailable", "model_not_found", "auth"})

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "context window",
    "too many tokens",
    "prompt is too long",
)


class ProviderError(Exception):
    """A model call that failed for good (after retries). `message` is already redacted."""

    def __init__(self, kind: str, message: str, retries: int = 0, *, status: int | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown provider error kind {kind!r}; expected one of {ERROR_KINDS}")
        self.kind = kind
        self.message = redact(message)
        self.retries = retries
        self.status = status
        super().__init__(f"{kind}: {self.message}")


@dataclass(frozen=True)
class Failure:
    """One failed HTTP attempt, classified: what kind, whether to retry, how long the server asked to wait."""

    kind: str
    message: str
    retryable: bool
    retry_after: float | None = None
    status: int | None = None


# Env variables whose values must never be written anywhere; profiles add theirs at import time.
SECRET_ENV_VARS: set[str] = {"OPENAI_API_KEY", "CHUTES_API_KEY", "OPENROUTER_API_KEY", "VLLM_API_KEY"}
_TOKEN_PATTERNS = (
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-]{8,}"), r"\1[REDACTED]"),
    (re.compile(r"\b(?:sk|cpk|rk)-[A-Za-z0-9._\-]{8,}"), "[REDACTED]"),
)


def redact(text: object, extra_secrets: tuple[str, ...] = ()) -> str:
    """Remove every known secret value (and token-looking strings) from a message before it is stored."""
    out = str(text)
    secrets = [os.environ.get(name, "") for name in SECRET_ENV_VARS] + list(extra_secrets)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "[REDACTED]")
    for pattern, replacement in _TOKEN_PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header; None when absent or unparseable."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime  # HTTP-date form

        try:
            import time

            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _body_text(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        return str(inner)
    return str(body if body is not None else getattr(exc, "message", exc))


def classify(exc: BaseException) -> Failure:
    """Map an exception from the `openai` client (or from parsing its answer) to a normalized Failure."""
    import openai

    msg = one_line(redact(_body_text(exc) if isinstance(exc, openai.APIError) else exc))
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", msg or "request timed out", True)
    if isinstance(exc, openai.APIConnectionError):
        return Failure("unavailable", f"connection error: {msg}", True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = getattr(exc.response, "headers", None)
        code = (getattr(exc, "code", None) or "").lower()
        lowered = msg.lower()
        if status == 429:
            return Failure("rate_limited", msg, True, _retry_after(headers), status)
        if code == "context_length_exceeded" or any(m in lowered for m in _CONTEXT_MARKERS):
            return Failure("context_length", msg, False, None, status)
        if status == 404 or code == "model_not_found":
            return Failure("model_not_found", msg, False, None, status)
        if status in (401, 403):
            return Failure("auth", msg, False, None, status)
        if status == 402:
            return Failure("unavailable", f"payment required: {msg}", False, None, status)
        if status == 408:
            return Failure("timeout", msg, True, _retry_after(headers), status)
        if status == 503:
            return Failure("unavailable", msg, True, _retry_after(headers), status)
        if status >= 500:
            return Failure("server_error", msg, True, _retry_after(headers), status)
        return Failure("bad_request", msg, False, None, status)
    if isinstance(exc, openai.APIResponseValidationError | ValueError | KeyError | TypeError):
        # Truncated or schema-breaking JSON from the server: transient on busy gateways, so retry.
        return Failure("bad_response", f"unparseable response: {msg}", True)
    return Failure("bad_response", f"{type(exc).__name__}: {msg}", False)
