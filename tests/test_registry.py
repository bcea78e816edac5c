"""swelab.registry: agent kinds and providers are name -> spec tables; build_agent is a lookup with a lazy import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from scaffold import write_params

from swelab import registry
from swelab.generate.agents import build_agent
from swelab.generate.agents.builtin import GoldAgent
from swelab.options import PatchOptions
from swelab.params import ModelConfig, load_params
from swelab.registry import AGENTS, AgentSpec


class EchoAgent:
    """A kind added by one table entry (this module stands in for its own module)."""

    mode = "echo"

    def __init__(self, model):
        self.model = model


def test_every_generated_kind_resolves_to_an_agent_class():
    for kind, spec in AGENTS.items():
        if spec.generated:
            assert callable(spec.load().run), kind
        else:
            assert spec.impl is None


def test_build_agent_looks_the_kind_up():
    assert isinstance(build_agent(ModelConfig(name="g", kind="gold")), GoldAgent)
    patch = build_agent(ModelConfig(name="p", kind="patch", provider="vllm", model_id="m", base_url="http://h/v1",
                                    options={"repair_rounds": 2}))
    assert patch.mode == "patch" and patch.repair_rounds == 2
    with pytest.raises(ValueError, match="model lost: unknown kind 'nope'"):
        build_agent(ModelConfig(name="lost", kind="nope"))
    with pytest.raises(ValueError, match="model theirs: kind 'import' has no agent"):
        build_agent(ModelConfig(name="theirs", kind="import"))


def test_a_new_kind_is_one_table_entry(tmp_path, monkeypatch):
    spec = AgentSpec(f"{__name__}:EchoAgent", needs_model=True, option_groups=(PatchOptions,))
    monkeypatch.setitem(AGENTS, "echo", spec)
    path = write_params(tmp_path, "models:\n  - {name: e, kind: echo, provider: chutes, model_id: m,"
                                  " options: {repair_rounds: 1}}\n")
    (model,) = load_params(path, environ={}).models
    agent = build_agent(model)
    assert isinstance(agent, EchoAgent) and agent.model.options.repair_rounds == 1


def test_the_ground_floor_registry_imports_no_stage():
    tree = ast.parse(Path(registry.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    stages = ("swelab.select", "swelab.generate", "swelab.evaluate", "swelab.analyze")
    assert not [m for m in modules if m and m.startswith(stages)]


def test_agent_modules_are_imported_only_when_built():
    # in a fresh interpreter: sys.modules of this one is shared with the other tests
    script = (
        "import sys\n"
        "from swelab.generate.agents import build_agent\n"
        "from swelab.params import ModelConfig\n"
        "model = ModelConfig(name='s', kind='shell', provider='vllm', model_id='m', base_url='http://h/v1')\n"
        "assert 'swelab.generate.agents.shell' not in sys.modules, 'imported before it was asked for'\n"
        "build_agent(model)\n"
        "assert 'swelab.generate.agents.shell' in sys.modules\n"
        "assert 'swelab.generate.agents.mini' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
