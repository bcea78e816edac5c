"""Load and validate a params YAML into a typed run configuration.

Every error names the file and the field. Environment variables override the file for the execution knobs of
the design card (WORKERS, EVAL_WORKERS, SELECTION_SEED, ATTEMPTS, ATTEMPT_TIMEOUT_S, COMMAND_TIMEOUT_S).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODEL_KINDS = ("gold", "empty", "patch", "shell", "mini-swe-agent", "import")
PROVIDERS = ("local", "chutes", "openrouter", "vllm", "thunderagent")
EVAL_BACKENDS = ("local", "docker", "modal", "auto")
# Knobs that change how fast a run goes, never what it produces: kept out of the run_id hash so that
# changing them resumes the same run.
EXECUTION_ONLY = ("workers", "eval_workers", "force", "outputs_dir")
ENV_OVERRIDES = {
    "WORKERS": "workers",
    "EVAL_WORKERS": "eval_workers",
    "SELECTION_SEED": "selection_seed",
    "ATTEMPTS": "attempts",
    "ATTEMPT_TIMEOUT_S": "attempt_timeout_s",
    "COMMAND_TIMEOUT_S": "command_timeout_s",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, field_name: str, problem: str):
        super().__init__(f"{path}: field '{field_name}': {problem}")
        self.path = str(path)
        self.field = field_name


@dataclass(frozen=True)
class DatasetConfig:
    source: str = "minibench"
    split: str = "test"
    revision: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kind: str
    provider: str | None = None
    model_id: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    max_output: int = 2048
    seed: int | None = 0
    context: str = "bm25"
    context_budget_tokens: int = 6000
    max_steps: int = 30
    instances: tuple[str, ...] | None = None  # a subset of the run's instances for this model (costly models)
    options: dict = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        """Model names may hold '/', which cannot be a folder name."""
        return self.name.replace("/", "__")

    @property
    def oracle(self) -> bool:
        """Saw what a real agent cannot: the gold patch itself, or the files it touches."""
        return self.kind == "gold" or (self.kind in ("patch", "shell") and self.context == "oracle")


@dataclass(frozen=True)
class RunParams:
    name: str
    source_file: str
    project_root: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    instances: Any = "all"
    selection: dict | None = None
    models: tuple[ModelConfig, ...] = ()
    attempts: int = 2
    workers: int = 12
    eval_workers: int = 4
    selection_seed: int = 42
    attempt_timeout_s: float = 90.0
    command_timeout_s: float = 25.0
    eval_backend: str = "local"
    eval_timeout_s: float = 300.0
    repo_sources: dict = field(default_factory=dict)
    force: bool = False
    outputs_dir: str = "outputs"

    def resolved(self) -> dict:
        """What the run is: every field but where the file was found."""
        data = dataclasses.asdict(self)
        data.pop("source_file")
        data.pop("project_root")
        return data

    @property
    def run_id(self) -> str:
        content = {k: v for k, v in self.resolved().items() if k not in EXECUTION_ONLY}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"

    @property
    def outputs_root(self) -> Path:
        root = Path(self.outputs_dir)
        return root if root.is_absolute() else Path(self.project_root) / root

    @property
    def run_dir(self) -> Path:
        return self.outputs_root / self.run_id

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else Path(self.project_root) / path


def find_project_root(start: Path) -> Path:
    """The nearest folder holding pyproject.toml; the params file's grandparent otherwise."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists() and (folder / "params").is_dir():
            return folder
    return start.parent if start.name == "params" else start


def locate_params(path: str | Path) -> Path:
    """Accept a path as given, or relative to the project root (notebooks run from notebooks/)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate.resolve()
    root = find_project_root(Path.cwd().resolve())
    if (root / candidate).exists():
        return (root / candidate).resolve()
    raise ParamsError(path, "<file>", "params file not found")


def load_params(path: str | Path, overrides: dict | None = None, environ: dict | None = None) -> RunParams:
    """Read, merge (file < environment < explicit overrides), validate."""
    file_path = locate_params(path)
    raw = _read_yaml(file_path)
    root = find_project_root(file_path.parent)
    raw = _apply_env(raw, file_path, os.environ if environ is None else environ)
    raw.update(overrides or {})
    return _build(raw, file_path, root)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(path, "<file>", f"not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(path, "<file>", "the top level must be a mapping")
    return data


def _apply_env(raw: dict, path: Path, environ: dict) -> dict:
    merged = dict(raw)
    for env_name, field_name in ENV_OVERRIDES.items():
        if environ.get(env_name):
            merged[field_name] = environ[env_name]
    return merged


_TOP_FIELDS = {f.name for f in dataclasses.fields(RunParams)} - {"source_file", "project_root"}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _build(raw: dict, path: Path, root: Path) -> RunParams:
    raw = dict(raw)
    includes = raw.pop("include_models", [])
    unknown = sorted(set(raw) - _TOP_FIELDS)
    if unknown:
        raise ParamsError(path, unknown[0], f"unknown field (known: {', '.join(sorted(_TOP_FIELDS))})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParamsError(path, "name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
    models = [*_included_models(includes, path, root), *_as_list(raw.get("models", []), path, "models")]
    values: dict[str, Any] = {
        "name": name,
        "source_file": str(path),
        "project_root": str(root),
        "dataset": _dataset(raw.get("dataset", "minibench"), path),
        "instances": _instances(raw.get("instances", "all"), path),
        "selection": _optional_mapping(raw.get("selection"), path, "selection"),
        "models": tuple(_model(entry, path, f"models[{i}]") for i, entry in enumerate(models)),
        "repo_sources": _optional_mapping(raw.get("repo_sources"), path, "repo_sources") or {},
    }
    for key, kind, minimum in (
        ("attempts", int, 1),
        ("workers", int, 1),
        ("eval_workers", int, 1),
        ("selection_seed", int, 0),
        ("attempt_timeout_s", float, 1),
        ("command_timeout_s", float, 1),
        ("eval_timeout_s", float, 1),
    ):
        if key in raw:
            values[key] = _number(raw[key], kind, minimum, path, key)
    if "force" in raw:
        if not isinstance(raw["force"], bool):
            raise ParamsError(path, "force", f"must be true or false, got {raw['force']!r}")
        values["force"] = raw["force"]
    if "eval_backend" in raw:
        values["eval_backend"] = _choice(raw["eval_backend"], EVAL_BACKENDS, path, "eval_backend")
    if "outputs_dir" in raw:
        values["outputs_dir"] = str(raw["outputs_dir"])
    params = RunParams(**values)
    if not params.models:
        raise ParamsError(path, "models", "at least one model is needed")
    names = [m.name for m in params.models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ParamsError(path, "models", f"duplicate model name {duplicated[0]!r}")
    return params


def _included_models(includes: Any, path: Path, root: Path) -> list:
    models: list = []
    for i, include in enumerate(_as_list(includes, path, "include_models")):
        include_path = Path(include) if Path(include).is_absolute() else root / include
        if not include_path.exists():
            raise ParamsError(path, f"include_models[{i}]", f"file {include} not found")
        data = _read_yaml(include_path)
        models.extend(_as_list(data.get("models", []), include_path, "models"))
    return models


def _as_list(value: Any, path: Path, field_name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParamsError(path, field_name, f"must be a list, got {type(value).__name__}")
    return value


def _optional_mapping(value: Any, path: Path, field_name: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ParamsError(path, field_name, f"must be a mapping, got {type(value).__name__}")
    return value


def _dataset(value: Any, path: Path) -> DatasetConfig:
    if isinstance(value, str):
        return DatasetConfig(source=value)
    if not isinstance(value, dict):
        raise ParamsError(path, "dataset", "must be a name/path or a mapping with source, split, revision")
    unknown = sorted(set(value) - {"source", "split", "revision"})
    if unknown:
        raise ParamsError(path, f"dataset.{unknown[0]}", "unknown field (known: source, split, revision)")
    if not isinstance(value.get("source"), str):
        raise ParamsError(path, "dataset.source", "a dataset name or a local path is needed")
    revision = value.get("revision")
    return DatasetConfig(
        source=value["source"],
        split=str(value.get("split", "test")),
        revision=None if revision is None else str(revision),
    )


def _instances(value: Any, path: Path) -> Any:
    if value == "all" or (isinstance(value, str) and value.endswith((".jsonl", ".txt", ".json"))):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ParamsError(path, "instances", "must be 'all', a list of instance ids, or a .jsonl/.txt file of ids")


def _model(entry: Any, path: Path, where: str) -> ModelConfig:
    if not isinstance(entry, dict):
        raise ParamsError(path, where, "each model must be a mapping")
    unknown = sorted(set(entry) - _MODEL_FIELDS)
    if unknown:
        raise ParamsError(path, f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(_MODEL_FIELDS))})")
    if not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ParamsError(path, f"{where}.name", "a model needs a name")
    kind = _choice(entry.get("kind", "patch"), MODEL_KINDS, path, f"{where}.kind")
    values = dict(entry, kind=kind)
    if kind in ("patch", "shell", "mini-swe-agent"):
        values["provider"] = _choice(entry.get("provider"), PROVIDERS, path, f"{where}.provider")
        if not isinstance(entry.get("model_id"), str):
            raise ParamsError(path, f"{where}.model_id", f"kind {kind} needs the provider's model id")
    if "context" in entry:
        values["context"] = _choice(entry["context"], ("bm25", "oracle"), path, f"{where}.context")
    for key, kind_, minimum in (("temperature", float, 0), ("max_output", int, 1), ("max_steps", int, 1)):
        if key in entry:
            values[key] = _number(entry[key], kind_, minimum, path, f"{where}.{key}")
    if "options" in entry and not isinstance(entry["options"], dict):
        raise ParamsError(path, f"{where}.options", "must be a mapping")
    if entry.get("instances") is not None:
        subset = entry["instances"]
        if not isinstance(subset, list) or not all(isinstance(i, str) for i in subset) or not subset:
            raise ParamsError(path, f"{where}.instances", "must be a non-empty list of instance ids")
        values["instances"] = tuple(subset)
    limit = values.get("options", {}).get("max_concurrency")
    if limit is not None:
        _number(limit, int, 1, path, f"{where}.options.max_concurrency")
    return ModelConfig(**values)


def _choice(value: Any, allowed: tuple[str, ...], path: Path, field_name: str) -> str:
    if value not in allowed:
        raise ParamsError(path, field_name, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _number(value: Any, kind: type, minimum: float, path: Path, field_name: str) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ParamsError(path, field_name, f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or (kind is int and float(value) != number):
        raise ParamsError(path, field_name, f"must be a whole number, got {value!r}")
    if number < minimum:
        raise ParamsError(path, field_name, f"must be at least {minimum}, got {value!r}")
    return number
