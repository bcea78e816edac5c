"""Provider profiles: where a model lives (base URL), which env variable holds its key, and what extra
request fields the provider needs. Every profile speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from swelab.generate.providers.errors import SECRET_ENV_VARS, ProviderError


@dataclass(frozen=True)
class Profile:
    name: str
    base_url: str | None  # None: the model entry (or the embedded server) must supply it
    api_key_env: str | None
    extra_body: dict[str, Any] = field(default_factory=dict)
    programs: bool = False  # ThunderAgent semantics: program_id on each request, release at the end


PROFILES: dict[str, Profile] = {
    "chutes": Profile("chutes", "https://llm.chutes.ai/v1", "CHUTES_API_KEY"),
    # OpenRouter reports the call's cost in usage only when asked to.
    "openrouter": Profile(
        "openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", {"usage": {"include": True}}
    ),
    "vllm": Profile("vllm", None, None),
    "thunderagent": Profile("thunderagent", None, None, programs=True),
    "local": Profile("local", None, None),
}
for _profile in PROFILES.values():
    if _profile.api_key_env:
        SECRET_ENV_VARS.add(_profile.api_key_env)

# base URLs of embedded servers that are up, by model name (filled by swelab.generate.local_model).
_LOCAL_URLS: dict[str, str] = {}
_LOCAL_LOCK = threading.Lock()


def register_local_url(model_name: str, base_url: str | None) -> None:
    with _LOCAL_LOCK:
        if base_url is None:
            _LOCAL_URLS.pop(model_name, None)
        else:
            _LOCAL_URLS[model_name] = base_url


def local_url(model_name: str) -> str | None:
    with _LOCAL_LOCK:
        return _LOCAL_URLS.get(model_name) or (next(iter(_LOCAL_URLS.values())) if _LOCAL_URLS else None)


@dataclass(frozen=True)
class Endpoint:
    """What one model call needs: resolved URL, the key's env variable (read per call), extra body."""

    profile: Profile
    base_url: str
    api_key_env: str | None
    extra_body: dict[str, Any]


def resolve_endpoint(model: Any) -> Endpoint:
    """Resolve a ModelConfig to an Endpoint; errors name the model and the missing field."""
    provider = getattr(model, "provider", None)
    name = getattr(model, "name", "?")
    if provider not in PROFILES:
        raise ProviderError("bad_request", f"model {name!r}: unknown provider {provider!r}; expected one of "
                            f"{sorted(PROFILES)}")
    profile = PROFILES[provider]
    base_url = getattr(model, "base_url", None) or profile.base_url
    if base_url is None and provider == "local":
        base_url = local_url(name) or os.environ.get("SWELAB_LOCAL_BASE_URL")
        if base_url is None:
            raise ProviderError(
                "unavailable", f"model {name!r}: the embedded local model server is not running"
            )
    if base_url is None:
        raise ProviderError("bad_request", f"model {name!r}: provider {provider!r} needs base_url")
    api_key_env = getattr(model, "api_key_env", None) or profile.api_key_env
    if api_key_env:
        SECRET_ENV_VARS.add(api_key_env)
    options = getattr(model, "options", None) or {}
    extra_body = {**profile.extra_body, **dict(options.get("extra_body") or {})}
    return Endpoint(profile, base_url.rstrip("/"), api_key_env, extra_body)


def read_api_key(endpoint: Endpoint, model_name: str) -> str:
    """The key, read from the environment at call time; self-served endpoints accept a placeholder."""
    if endpoint.api_key_env is None:
        return "EMPTY"
    value = os.environ.get(endpoint.api_key_env, "")
    if not value:
        if endpoint.profile.name in ("chutes", "openrouter"):
            raise ProviderError("auth", f"model {model_name!r}: environment variable {endpoint.api_key_env} "
                                "is not set")
        return "EMPTY"
    return value


def server_root(base_url: str) -> str:
    """ThunderAgent's control routes live beside the OpenAI routes, without the /v1 prefix."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base
