"""Params: typed, validated, errors that name the file and the field; run_id from the resolved params."""

from __future__ import annotations

import pytest
from scaffold import write_params

from swelab.params import ParamsError, load_params


def write(tmp_path, text: str, name: str = "p.yaml"):
    return write_params(tmp_path, text, name)


BASE = "models:\n  - {name: gold, kind: gold}\n"


def test_defaults_and_project_root(tmp_path):
    params = load_params(write(tmp_path, BASE), environ={})
    assert params.name == "p" and params.attempts == 2 and params.workers == 12 and params.eval_workers == 4
    assert params.selection_seed == 42 and params.attempt_timeout_s == 90 and params.command_timeout_s == 25
    assert params.run_dir.parent == tmp_path / "outputs"
    assert params.run_id.startswith("p-") and len(params.run_id) == len("p-") + 8


@pytest.mark.parametrize(
    "text, field",
    [
        (BASE + "atempts: 3\n", "atempts"),
        (BASE + "attempts: 0\n", "attempts"),
        (BASE + "attempts: two\n", "attempts"),
        (BASE + "eval_backend: kubernetes\n", "eval_backend"),
        ("models:\n  - {name: m, kind: patch, provider: chutes}\n", "models[0].model_id"),
        ("models:\n  - {name: m, kind: patch, provider: nowhere, model_id: x}\n", "models[0].provider"),
        ("models:\n  - {name: m, kind: gold, temprature: 1}\n", "models[0].temprature"),
        ("models: []\n", "models"),
        ("models:\n  - {name: a, kind: gold}\n  - {name: a, kind: empty}\n", "models"),
        (BASE + "dataset: {source: x, splt: test}\n", "dataset.splt"),
        (BASE + "instances: 7\n", "instances"),
        ("models: [\n", "<file>"),
    ],
)
def test_bad_params_name_the_file_and_the_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as error:
        load_params(path, environ={})
    assert error.value.field == field
    assert str(path) in str(error.value) and f"'{field}'" in str(error.value)


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, BASE + "workers: 3\nattempts: 2\n")
    params = load_params(path, environ={"WORKERS": "7", "ATTEMPTS": "3", "SELECTION_SEED": "5"})
    assert (params.workers, params.attempts, params.selection_seed) == (7, 3, 5)
    with pytest.raises(ParamsError, match="'workers'"):
        load_params(path, environ={"WORKERS": "many"})


def test_run_id_ignores_execution_knobs_but_not_content(tmp_path):
    path = write(tmp_path, BASE)
    base = load_params(path, environ={}).run_id
    assert load_params(path, environ={"WORKERS": "64", "EVAL_WORKERS": "1"}).run_id == base
    assert load_params(path, overrides={"force": True}, environ={}).run_id == base
    assert load_params(path, environ={"ATTEMPTS": "3"}).run_id != base
    assert load_params(write(tmp_path, BASE.replace("gold}", "gold, temperature: 0.5}"), "p.yaml"),
                       environ={}).run_id != base


def test_include_models_and_model_dirname(tmp_path):
    (tmp_path / "params" / "models").mkdir(parents=True)
    (tmp_path / "params" / "models" / "set.yaml").write_text(
        "models:\n  - {name: Qwen/Qwen3-Coder, kind: patch, provider: chutes, model_id: Qwen/Qwen3-Coder}\n"
    )
    params = load_params(write(tmp_path, "include_models: [params/models/set.yaml]\n" + BASE), environ={})
    assert [m.name for m in params.models] == ["Qwen/Qwen3-Coder", "gold"]
    assert params.models[0].dirname == "Qwen__Qwen3-Coder"
    with pytest.raises(ParamsError, match="include_models\\[0\\]"):
        load_params(write(tmp_path, "include_models: [nope.yaml]\n" + BASE), environ={})


def test_the_committed_demo_params_load():
    params = load_params("params/demo.yaml", environ={})
    assert {m.kind for m in params.models} >= {"gold", "empty"}
    assert params.dataset.source == "minibench"


@pytest.mark.parametrize("name", ["i1", "i2", "i3", "i4", "lite_local_check"])
def test_every_committed_run_params_file_loads(name):
    params = load_params(f"params/{name}.yaml", environ={})
    assert params.models and params.instances
    assert params.run_id.startswith(params.name)
