"""Provider profiles: where a model lives (base URL), which env variable holds its key, and what extra
request fields the provider needs. Every profile speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from swelab.generate.providers.errors import SECRET_ENV_VARS, ProviderError
from swelab.registry import PROVIDERS, ProviderSpec

Profile = ProviderSpec  # the table lives in swelab.registry; these names stay for existing code
PROFILES: dict[str, Profile] = PROVIDERS
for _profile in PROFILES.values():
    if _profile.api_key_env:
        SECRET_ENV_VARS.add(_profile.api_key_env)


@dataclass(frozen=True)
class Endpoint:
    """What one model call needs: resolved URL, the key's env variable (read per call), extra body."""

    profile: Profile
    base_url: str
    api_key_env: str | None
    extra_body: dict[str, Any]


def resolve_endpoint(model: Any) -> Endpoint:
    """Resolve a ModelConfig to an Endpoint; errors name the model and the missing field.

    The embedded local server's URL arrives one way only: the runner starts the server and hands the agent
    a copy of the model entry with base_url set."""
    provider = getattr(model, "provider", None)
    name = getattr(model, "name", "?")
    if provider not in PROFILES:
        raise ProviderError("bad_request", f"model {name!r}: unknown provider {provider!r}; expected one of "
                            f"{sorted(PROFILES)}")
    profile = PROFILES[provider]
    base_url = getattr(model, "base_url", None) or profile.base_url
    if base_url is None and provider == "local":
        raise ProviderError("unavailable", f"model {name!r}: no base_url and the embedded server is not running")
    if base_url is None:
        raise ProviderError("bad_request", f"model {name!r}: provider {provider!r} needs base_url")
    api_key_env = getattr(model, "api_key_env", None) or profile.api_key_env
    if api_key_env:
        SECRET_ENV_VARS.add(api_key_env)
    extra_body = {**profile.extra_body, **model.options.extra_body}
    return Endpoint(profile, base_url.rstrip("/"), api_key_env, extra_body)


def read_api_key(endpoint: Endpoint, model_name: str) -> str:
    """The key, read from the environment at call time; self-served endpoints accept a placeholder."""
    if endpoint.api_key_env is None:
        return "EMPTY"
    value = os.environ.get(endpoint.api_key_env, "")
    if not value:
        if endpoint.profile.key_required:
            raise ProviderError("auth", f"model {model_name!r}: environment variable {endpoint.api_key_env} "
                                "is not set")
        return "EMPTY"
    return value


def server_root(base_url: str) -> str:
    """ThunderAgent's control routes live beside the OpenAI routes, without the /v1 prefix."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base
