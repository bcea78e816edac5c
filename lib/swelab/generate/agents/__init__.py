"""Agents: one per model entry kind, looked up in swelab.registry.AGENTS. An agent's module is imported only
when a params file asks for its kind (mini-swe-agent pulls in a heavy dependency)."""

from __future__ import annotations

from swelab.generate.agents.base import Agent, AttemptContext, AttemptOutcome
from swelab.params import ModelConfig
from swelab.registry import AGENTS

__all__ = ["Agent", "AttemptContext", "AttemptOutcome", "build_agent"]


def build_agent(model: ModelConfig) -> Agent:
    spec = AGENTS.get(model.kind)
    if spec is None:
        raise ValueError(f"model {model.name}: unknown kind {model.kind!r} (known: {', '.join(AGENTS)})")
    if spec.impl is None:
        raise ValueError(f"model {model.name}: kind {model.kind!r} has no agent (its runs are not generated)")
    agent_class = spec.load()
    return agent_class(model) if spec.needs_model else agent_class()
