"""Agents: one per model entry kind. Heavy modes are imported only when a params file asks for them."""

from __future__ import annotations

from swelab.generate.agents.base import Agent, AttemptContext, AttemptOutcome
from swelab.params import ModelConfig

__all__ = ["Agent", "AttemptContext", "AttemptOutcome", "build_agent"]


def build_agent(model: ModelConfig) -> Agent:
    if model.kind == "gold":
        from swelab.generate.agents.builtin import GoldAgent

        return GoldAgent()
    if model.kind == "empty":
        from swelab.generate.agents.builtin import EmptyAgent

        return EmptyAgent()
    if model.kind == "patch":
        from swelab.generate.agents.patch import PatchAgent

        return PatchAgent(model)
    if model.kind == "shell":
        from swelab.generate.agents.shell import ShellAgent

        return ShellAgent(model)
    if model.kind == "mini-swe-agent":
        from swelab.generate.agents.mini import MiniSweAgent

        return MiniSweAgent(model)
    raise ValueError(f"model {model.name}: kind {model.kind!r} has no agent (imported runs are not generated)")
