"""Params: typed, validated, errors that name the file and the field; run_id from the resolved params."""

from __future__ import annotations

import dataclasses

import pytest
from scaffold import write_params

from swelab.options import OptionError
from swelab.params import ModelConfig, ParamsError, load_params
from swelab.registry import AGENTS, PROVIDERS


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


# -- typed options, registries, the fields a model entry must get right ------------------------------------

PATCH = "  - {name: p, kind: patch, provider: chutes, model_id: m"
SHELL = "  - {name: s, kind: shell, provider: vllm, model_id: m, base_url: 'http://127.0.0.1:8000/v1'"
STABLE = """name: stable
instances: [a__b-1]
models:
  - {name: gold, kind: gold}
  - name: Qwen/Qwen3-8B
    kind: patch
    provider: local
    model_id: qwen3-8b
    seed: 3
    context_budget_tokens: 1200
    options: {max_concurrency: 1, request_timeout_s: 30, n_ctx: 2048, extra_body: {top_k: 20}}
  - name: sh
    kind: shell
    provider: vllm
    model_id: m
    base_url: http://127.0.0.1:8000/v1
    options: {tool_calling: false, tools: [bash, submit]}
  - {name: theirs, kind: import, options: {paths: [a.jsonl, b.jsonl], format: swebench}}
"""


def models_yaml(*entries: str) -> str:
    return "models:\n  - {name: gold, kind: gold}\n  - {name: empty, kind: empty}\n" + "\n".join(entries) + "\n"


@pytest.mark.parametrize(
    "entry, field, words",
    [
        (SHELL + ", options: {tool_caling: false}}", "models[2].options.tool_caling", "unknown option (known: "),
        (PATCH + ", options: {tool_calling: false}}", "models[2].options.tool_calling",
         "not an option of kind patch with provider chutes"),
        (PATCH + ", options: {gguf: x.gguf}}", "models[2].options.gguf", "not an option of kind patch"),
        (PATCH + ", options: {max_retries: lots}}", "models[2].options.max_retries", "whole number"),
        (PATCH + ", options: {request_timeout_s: soon}}", "models[2].options.request_timeout_s", "a number"),
        (PATCH + ", options: {stream: 'yes'}}", "models[2].options.stream", "true or false"),
        (PATCH + ", options: {max_concurrency: 0}}", "models[2].options.max_concurrency", "at least 1"),
        (PATCH + ", options: {extra_body: 3}}", "models[2].options.extra_body", "mapping"),
        (SHELL + ", options: {tools: bash}}", "models[2].options.tools", "list of strings"),
        (PATCH + ", options: [1]}", "models[2].options", "mapping"),
        (PATCH + ", seed: abc}", "models[2].seed", "number"),
        (PATCH + ", seed: 1.5}", "models[2].seed", "whole number"),
        (PATCH + ", context_budget_tokens: lots}", "models[2].context_budget_tokens", "number"),
        (PATCH + ", max_steps: 0}", "models[2].max_steps", "at least 1"),
        ("  - {name: v, kind: patch, provider: vllm, model_id: m}", "models[2].base_url", "needs the server's"),
        ("  - {name: t, kind: shell, provider: thunderagent, model_id: m}", "models[2].base_url", "base_url"),
        (PATCH + ", base_url: 'llm.example/v1'}", "models[2].base_url", "http"),
        (SHELL + ", context: oracle}", "models[2].context", "kind shell does not read context"),
        ("  - {name: i, kind: import}", "models[2].options.path", "kind import needs path"),
        ("  - {name: i, kind: import, options: {path: a.jsonl, format: swe}}", "models[2].options.format",
         "must be one of auto,"),
    ],
)
def test_bad_model_entries_stop_with_one_line_naming_the_field(tmp_path, entry, field, words):
    path = write(tmp_path, models_yaml(entry))
    with pytest.raises(ParamsError) as error:
        load_params(path, environ={})
    message = str(error.value)
    assert error.value.field == field and message.startswith(f"{path}: field '{field}': ")
    assert words in message and "\n" not in message


@pytest.mark.parametrize("name", ["..", ".", "a/../b", "../x", "/abs", "a//b", "a\\\\b", "a b", "a:b", ".hidden",
                                  "x/"])
def test_a_model_name_must_be_safe_as_a_folder_name(tmp_path, name):
    path = write(tmp_path, models_yaml(f'  - {{name: "{name}", kind: empty}}'))
    with pytest.raises(ParamsError) as error:
        load_params(path, environ={})
    assert error.value.field == "models[2].name"


def test_model_names_that_would_share_a_folder_are_refused(tmp_path):
    path = write(tmp_path, models_yaml("  - {name: a/b, kind: empty}\n  - {name: a__b, kind: empty}"))
    with pytest.raises(ParamsError, match="share one folder"):
        load_params(path, environ={})


def test_api_key_env_is_a_name_never_a_value(tmp_path):
    secret = "sk-or-v1-0123456789abcdef"
    path = write(tmp_path, models_yaml(PATCH + f", api_key_env: '{secret}'}}"))
    with pytest.raises(ParamsError) as error:
        load_params(path, environ={})
    assert error.value.field == "models[2].api_key_env" and secret not in str(error.value)
    ok = load_params(write(tmp_path, models_yaml(PATCH + ", api_key_env: MY_CHUTES_KEY}")), environ={})
    assert ok.models[2].api_key_env == "MY_CHUTES_KEY"


def test_options_are_typed_with_their_defaults(tmp_path):
    params = load_params(write(tmp_path, STABLE), environ={})
    qwen, shell, theirs = params.models[1:]
    assert qwen.dirname == "Qwen__Qwen3-8B"
    assert (qwen.options.max_concurrency, qwen.options.n_ctx, qwen.options.max_retries) == (1, 2048, 4)
    assert qwen.options.extra_body == {"top_k": 20} and qwen.options.gguf.endswith(".gguf")
    assert shell.options.tool_calling is False and shell.options.tools == ("bash", "submit")
    assert shell.options.max_output_bytes == 10000 and shell.options.use_environment is True
    assert theirs.options.paths == ("a.jsonl", "b.jsonl") and theirs.options.attempt == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        qwen.options.max_retries = 9


def test_run_id_is_what_it_was_when_options_were_plain_dicts(tmp_path):
    # computed with the params module from before typed options: the options hash as the file gave them.
    # Recomputed once when two things that can change a verdict joined the hashed content: the official 1800 s
    # eval timeout (was 300) and eval_limits; with those two as before, the hash is the old stable-8fd9e245.
    params = load_params(write(tmp_path, STABLE), environ={})
    assert params.run_id == "stable-9d38596a"
    assert params.resolved()["models"][1]["options"] == {
        "max_concurrency": 1, "request_timeout_s": 30, "n_ctx": 2048, "extra_body": {"top_k": 20}}


def test_a_kind_that_does_not_read_context_is_never_labelled_oracle():
    assert ModelConfig(name="p", kind="patch", provider="vllm", model_id="m", context="oracle").oracle
    assert ModelConfig(name="g", kind="gold").oracle
    for kind in ("shell", "mini-swe-agent"):
        assert not ModelConfig(name="s", kind=kind, provider="vllm", model_id="m", context="oracle").oracle


def test_entries_built_in_code_are_checked_too():
    with pytest.raises(OptionError, match="tool_caling: unknown option"):
        ModelConfig(name="s", kind="shell", provider="vllm", model_id="m", options={"tool_caling": False})
    built = ModelConfig(name="s", kind="shell", provider="vllm", model_id="m", options={"tool_calling": False})
    assert dataclasses.replace(built, base_url="http://h/v1").options == built.options


def test_allowed_kinds_and_providers_come_from_the_registry(tmp_path):
    assert list(AGENTS) == ["gold", "empty", "patch", "shell", "mini-swe-agent", "import", "probe"]
    path = write(tmp_path, models_yaml("  - {name: x, kind: patch, provider: nowhere, model_id: m}"))
    with pytest.raises(ParamsError, match=f"must be one of {', '.join(PROVIDERS)}, got 'nowhere'"):
        load_params(path, environ={})


def test_a_params_file_outside_any_project_uses_the_installed_project(tmp_path):
    from swelab import paths

    path = tmp_path / "anywhere.yaml"
    path.write_text("models:\n  - {name: gold, kind: gold}\n")
    params = load_params(path, environ={})
    assert params.project_root == str(paths.project_root()) != str(tmp_path)
