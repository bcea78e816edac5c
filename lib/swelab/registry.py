"""The two name -> spec tables the rest of the library reads: agent kinds and model providers.

Adding a provider is one entry in PROVIDERS; adding an agent kind is its module plus one entry in AGENTS.
Implementations are named by dotted strings ("package.module:Class") and imported only when a params file
uses them, so this ground-floor module imports no stage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from swelab.options import (
    ImportOptions,
    LocalServerOptions,
    MiniOptions,
    PatchOptions,
    ShellOptions,
    TransportOptions,
)


@dataclass(frozen=True)
class AgentSpec:
    """What a `kind:` of model entry is."""

    impl: str | None
    """"module:Class" of the agent; built with the ModelConfig when `needs_model`, with no arguments
    otherwise. None: nothing to build (the kind is not generated)."""
    needs_model: bool = False
    """The entry must name a provider and a model_id."""
    generated: bool = True
    """The runner generates its cells (an imported run is read from files instead)."""
    option_groups: tuple[type, ...] = ()
    """The option groups its entry accepts (the provider may add its own)."""
    reads_context: bool = False
    """Its prompt is built from `context` (bm25 retrieval or the oracle files) and `context_budget_tokens`."""
    oracle: bool = False
    """Sees the gold patch itself, whatever its context."""
    produces_patch: bool = True
    """Its cells submit a patch for grading; False (the contamination probe) keeps them out of the predictions
    files, so evaluation never grades them."""

    def load(self) -> type:
        """The implementation class, imported now."""
        if self.impl is None:
            raise LookupError("this kind has no agent to build")
        module_name, _, attribute = self.impl.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class ProviderSpec:
    """Where a model lives and how to reach it; every provider speaks OpenAI chat completions."""

    name: str
    base_url: str | None
    """None: the model entry (or, for `local`, the embedded server the runner starts) supplies it."""
    api_key_env: str | None
    """The environment variable holding the key (read per call, never written anywhere)."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Request fields the provider needs on every call."""
    programs: bool = False
    """ThunderAgent semantics: program_id on each request, release at the end."""
    requires_base_url: bool = False
    """A model entry must give its base_url (self-served endpoints)."""
    key_required: bool = False
    """A missing key is an auth failure (hosted); self-served endpoints accept a placeholder."""
    option_groups: tuple[type, ...] = ()
    """Option groups the provider adds to the kind's."""


_CALLS_A_MODEL = (TransportOptions,)

AGENTS: dict[str, AgentSpec] = {
    "gold": AgentSpec("swelab.generate.agents.builtin:GoldAgent", oracle=True),
    "empty": AgentSpec("swelab.generate.agents.builtin:EmptyAgent"),
    "patch": AgentSpec("swelab.generate.agents.patch:PatchAgent", needs_model=True,
                       option_groups=(*_CALLS_A_MODEL, PatchOptions), reads_context=True),
    "shell": AgentSpec("swelab.generate.agents.shell:ShellAgent", needs_model=True,
                       option_groups=(*_CALLS_A_MODEL, ShellOptions)),
    "mini-swe-agent": AgentSpec("swelab.generate.agents.mini:MiniSweAgent", needs_model=True,
                                option_groups=(*_CALLS_A_MODEL, ShellOptions, MiniOptions)),
    "import": AgentSpec(None, generated=False, option_groups=(ImportOptions,)),
    # the contamination probe: names the files it would change from the issue text alone (no code)
    "probe": AgentSpec("swelab.generate.agents.probe:ProbeAgent", needs_model=True, option_groups=_CALLS_A_MODEL,
                       produces_patch=False),
}

PROVIDERS: dict[str, ProviderSpec] = {
    "chutes": ProviderSpec("chutes", "https://llm.chutes.ai/v1", "CHUTES_API_KEY", key_required=True),
    # OpenRouter reports the call's cost in usage only when asked to.
    "openrouter": ProviderSpec("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY",
                               {"usage": {"include": True}}, key_required=True),
    "vllm": ProviderSpec("vllm", None, None, requires_base_url=True),
    "thunderagent": ProviderSpec("thunderagent", None, None, programs=True, requires_base_url=True),
    "local": ProviderSpec("local", None, None, option_groups=(LocalServerOptions,)),
}


def option_groups(kind: str | None, provider: str | None) -> tuple[type, ...] | None:
    """The option groups a (kind, provider) entry accepts; None when the kind is not in AGENTS."""
    spec = AGENTS.get(kind or "")
    if spec is None:
        return None
    extra = PROVIDERS[provider].option_groups if spec.needs_model and provider in PROVIDERS else ()
    return (*spec.option_groups, *extra)
