"""Load and validate a params YAML into a typed run configuration.

Every error names the file and the field. Environment variables override the file for the execution knobs of
the design card (WORKERS, EVAL_WORKERS, SELECTION_SEED, ATTEMPTS, ATTEMPT_TIMEOUT_S, COMMAND_TIMEOUT_S).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swelab.options import ModelOptions, OptionError, parse_options
from swelab.paths import project_root as installed_project_root
from swelab.registry import AGENTS, PROVIDERS, option_groups
from swelab.sandbox import EvalLimits

EVAL_BACKENDS = ("local", "docker", "modal", "auto")
# Knobs that change how fast a run goes, never what it produces: kept out of the run_id hash so that
# changing them resumes the same run.
# eval_repeats only regrades the gold patch and the no-patch baseline (eval/discrimination.json): raising it
# on a finished run adds repeats to that run instead of starting a new one.
EXECUTION_ONLY = ("workers", "eval_workers", "force", "outputs_dir", "eval_repeats", "workers_auto", "budgets",
                  "executor")
# Daily request budgets per provider (the research plan: Chutes gives about 2,000 requests a day for free);
# a params file's `budgets:` is merged over these, `requests_per_day: null` lifts one.
DEFAULT_BUDGETS = {"chutes": {"requests_per_day": 2000}}
BUDGET_FIELDS = ("requests_per_day",)
ENV_OVERRIDES = {
    "WORKERS": "workers",
    "EVAL_WORKERS": "eval_workers",
    "SELECTION_SEED": "selection_seed",
    "ATTEMPTS": "attempts",
    "ATTEMPT_TIMEOUT_S": "attempt_timeout_s",
    "COMMAND_TIMEOUT_S": "command_timeout_s",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A model name becomes a folder name ('/' maps to '__'): every part starts with a letter or digit, so no
# '.', '..', hidden or empty part, no other separator.
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_CONTEXTS = ("bm25", "oracle")
EXECUTOR_KINDS = ("local", "dask")
_EXECUTOR_FIELDS = ("kind", "address", "cluster", "workers", "threads_per_worker")


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the file and the field."""

    def __init__(self, path: Path | str, field_name: str, problem: str):
        super().__init__(f"{path}: field '{field_name}': {' '.join(str(problem).split())}")  # one line
        self.path = str(path)
        self.field = field_name


@dataclass(frozen=True)
class DatasetConfig:
    source: str = "minibench"
    split: str = "test"
    revision: str | None = None


@dataclass(frozen=True)
class ExecutorConfig:
    """Where generation attempts and evaluations run (swelab.executor): threads here, or a Dask cluster."""

    kind: str = "local"  # local: threads in this process | dask: tasks on a Dask cluster
    address: str | None = None  # dask: a running scheduler, tcp://HOST:8786
    cluster: str | None = None  # dask: "local" starts a LocalCluster of worker processes on this machine
    workers: int = 2  # cluster: local: how many worker processes
    threads_per_worker: int = 1  # cluster: local: threads per worker process


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
    options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        # Entries built in code may pass a plain mapping: it is checked as a params file's would be.
        if not isinstance(self.options, ModelOptions):
            groups = option_groups(self.kind, self.provider)
            object.__setattr__(self, "options", parse_options(self.options, groups, _owner(self.kind, self.provider)))

    @property
    def dirname(self) -> str:
        """Model names may hold '/', which cannot be a folder name."""
        return self.name.replace("/", "__")

    @property
    def oracle(self) -> bool:
        """Saw what a real agent cannot: the gold patch itself, or (kinds that read `context`) its files."""
        spec = AGENTS.get(self.kind)
        return spec is not None and (spec.oracle or (spec.reads_context and self.context == "oracle"))

    def resolved(self) -> dict:
        """Every field; options as the params file gave them (what they were before options were typed)."""
        data = dataclasses.asdict(self)
        data["options"] = copy.deepcopy(self.options.to_dict())
        return data


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
    workers_auto: bool = False  # `workers: auto`: start at `workers`, scale with the machine's CPU use
    eval_workers: int = 4
    selection_seed: int = 42
    attempt_timeout_s: float = 90.0
    command_timeout_s: float = 25.0
    eval_backend: str = "local"
    eval_timeout_s: float = 1800.0  # the official harness default (swebench run_evaluation --timeout)
    eval_repeats: int = 1  # times evaluation grades the gold patch and no patch per instance (flaky tests)
    repo_sources: dict = field(default_factory=dict)
    force: bool = False
    outputs_dir: str = "outputs"
    budgets: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_BUDGETS))  # provider -> daily limits
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where attempts and evaluations run
    eval_limits: EvalLimits = field(default_factory=EvalLimits)  # the evaluation sandbox's resource limits

    def resolved(self) -> dict:
        """What the run is: every field but where the file was found."""
        data = dataclasses.asdict(self)
        data.pop("source_file")
        data.pop("project_root")
        data["models"] = [model.resolved() for model in self.models]
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
    """The project holding the params file (pyproject.toml + params/ above it), else the installed checkout,
    else the working directory; never the params file's own folder (a params file in /tmp works)."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists() and (folder / "params").is_dir():
            return folder
    return installed_project_root()


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
    # `auto` on one side (file or WORKERS) and a count on the other: scale automatically from that count
    env_workers, file_workers = environ.get("WORKERS"), raw.get("workers")
    if env_workers and (env_workers == "auto") != (file_workers == "auto") and "auto" in (env_workers, file_workers):
        count = file_workers if env_workers == "auto" else env_workers
        merged["workers"], merged["workers_auto"] = (count if count is not None else "auto"), True
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
    if raw.get("workers") == "auto":  # the default count, scaled with the machine's CPU use
        raw["workers"] = RunParams.workers
        raw["workers_auto"] = True
    if "workers_auto" in raw:
        if not isinstance(raw["workers_auto"], bool):
            raise ParamsError(path, "workers_auto", f"must be true or false, got {raw['workers_auto']!r}")
        values["workers_auto"] = raw["workers_auto"]
    if "budgets" in raw:
        values["budgets"] = _budgets(raw["budgets"], path)
    for key, kind, minimum in (
        ("attempts", int, 1),
        ("workers", int, 1),
        ("eval_workers", int, 1),
        ("selection_seed", int, 0),
        ("attempt_timeout_s", float, 1),
        ("command_timeout_s", float, 1),
        ("eval_timeout_s", float, 1),
        ("eval_repeats", int, 1),
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
    if "executor" in raw:
        values["executor"] = _executor(raw["executor"], path)
    if "eval_limits" in raw:
        values["eval_limits"] = _eval_limits(raw["eval_limits"], path)
    params = RunParams(**values)
    if not params.models:
        raise ParamsError(path, "models", "at least one model is needed")
    names = [m.name for m in params.models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ParamsError(path, "models", f"duplicate model name {duplicated[0]!r}")
    folders = [m.dirname for m in params.models]
    clashing = sorted({m.name for m in params.models if folders.count(m.dirname) > 1})
    if clashing:
        raise ParamsError(path, "models", f"model names {' and '.join(map(repr, clashing))} share one folder")
    return params


def _eval_limits(value: Any, path: Path) -> EvalLimits:
    """`eval_limits: {memory_bytes: ..., processes: ..., ...}` over the sandbox's defaults."""
    known = [f.name for f in dataclasses.fields(EvalLimits)]
    if not isinstance(value, dict):
        raise ParamsError(path, "eval_limits", f"must be a mapping of {', '.join(known)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ParamsError(path, f"eval_limits.{unknown[0]}", f"unknown limit (known: {', '.join(known)})")
    for key, number in value.items():
        _number(number, int, 1, path, f"eval_limits.{key}")
    return EvalLimits(**{key: int(number) for key, number in value.items()})


def _executor(value: Any, path: Path) -> ExecutorConfig:
    """`executor: {kind: local}` | `{kind: dask, address: tcp://HOST:8786}` | `{kind: dask, cluster: local,
    workers: N}`."""
    if not isinstance(value, dict):
        raise ParamsError(path, "executor", "must be a mapping such as {kind: local} or {kind: dask, cluster: local}")
    unknown = sorted(set(value) - set(_EXECUTOR_FIELDS))
    if unknown:
        raise ParamsError(path, f"executor.{unknown[0]}", f"unknown field (known: {', '.join(_EXECUTOR_FIELDS)})")
    kind = _choice(value.get("kind", "local"), EXECUTOR_KINDS, path, "executor.kind")
    if kind == "local":
        extra = sorted(set(value) - {"kind"})
        if extra:
            raise ParamsError(path, f"executor.{extra[0]}", "kind local takes no other field (it runs threads here)")
        return ExecutorConfig()
    address, cluster = value.get("address"), value.get("cluster")
    if (address is None) == (cluster is None):
        raise ParamsError(path, "executor", "kind dask needs exactly one of address (tcp://HOST:8786) or "
                          "cluster: local")
    if address is not None:
        if not isinstance(address, str) or "://" not in address:
            raise ParamsError(path, "executor.address", f"must be a scheduler address like tcp://HOST:8786, "
                              f"got {address!r}")
        for key in ("workers", "threads_per_worker"):
            if key in value:
                raise ParamsError(path, f"executor.{key}", "sizes a cluster: local; a running scheduler has its own")
        return ExecutorConfig(kind="dask", address=address)
    _choice(cluster, ("local",), path, "executor.cluster")
    sizes = {key: _number(value[key], int, 1, path, f"executor.{key}")
             for key in ("workers", "threads_per_worker") if key in value}
    return ExecutorConfig(kind="dask", cluster="local", **sizes)


def _budgets(value: Any, path: Path) -> dict:
    """`budgets: {provider: {requests_per_day: N}}` merged over DEFAULT_BUDGETS; null lifts a limit."""
    if not isinstance(value, dict):
        raise ParamsError(path, "budgets", "must map a provider to {requests_per_day: N}")
    merged = copy.deepcopy(DEFAULT_BUDGETS)
    for provider, spec in value.items():
        if provider not in PROVIDERS:
            raise ParamsError(path, f"budgets.{provider}", f"unknown provider (known: {', '.join(PROVIDERS)})")
        if not isinstance(spec, dict):
            raise ParamsError(path, f"budgets.{provider}", "must be a mapping like {requests_per_day: 2000}")
        unknown = sorted(set(spec) - set(BUDGET_FIELDS))
        if unknown:
            raise ParamsError(path, f"budgets.{provider}.{unknown[0]}",
                              f"unknown field (known: {', '.join(BUDGET_FIELDS)})")
        limit = spec.get("requests_per_day")
        if limit is not None:
            limit = _number(limit, int, 1, path, f"budgets.{provider}.requests_per_day")
        merged[provider] = {"requests_per_day": limit}
    return merged


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
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ParamsError(path, f"{where}.name", "a model needs a name")
    if not _MODEL_NAME_RE.match(name):
        raise ParamsError(path, f"{where}.name", "must be letters, digits, '.', '_' or '-' in parts separated by "
                          f"'/', each starting with a letter or digit (it names a folder), got {name!r}")
    kind = _choice(entry.get("kind", "patch"), tuple(AGENTS), path, f"{where}.kind")
    spec = AGENTS[kind]
    values = dict(entry, kind=kind)
    if spec.needs_model:
        provider = values["provider"] = _choice(entry.get("provider"), tuple(PROVIDERS), path, f"{where}.provider")
        if not isinstance(entry.get("model_id"), str) or not entry["model_id"]:
            raise ParamsError(path, f"{where}.model_id", f"kind {kind} needs the provider's model id")
        if PROVIDERS[provider].requires_base_url and entry.get("base_url") is None:
            raise ParamsError(path, f"{where}.base_url", f"provider {provider} needs the server's base_url")
    if entry.get("base_url") is not None:
        url = entry["base_url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParamsError(path, f"{where}.base_url", f"must be an http:// or https:// URL, got {url!r}")
    if entry.get("api_key_env") is not None and not (
        isinstance(entry["api_key_env"], str) and _ENV_NAME_RE.match(entry["api_key_env"])
    ):
        # never echo the value: it may be the key itself
        raise ParamsError(path, f"{where}.api_key_env", "must name an environment variable (A-Z, 0-9, _), "
                          "never hold the key itself")
    for key in ("context", "context_budget_tokens"):
        if key in entry and not spec.reads_context:
            raise ParamsError(path, f"{where}.{key}", f"kind {kind} does not read {key}; remove it")
    if "context" in entry:
        values["context"] = _choice(entry["context"], _CONTEXTS, path, f"{where}.context")
    for key, kind_, minimum in (
        ("temperature", float, 0),
        ("max_output", int, 1),
        ("max_steps", int, 1),
        ("context_budget_tokens", int, 1),
    ):
        if key in entry:
            values[key] = _number(entry[key], kind_, minimum, path, f"{where}.{key}")
    if entry.get("seed") is not None:
        values["seed"] = _number(entry["seed"], int, 0, path, f"{where}.seed")
    if entry.get("instances") is not None:
        subset = entry["instances"]
        if not isinstance(subset, list) or not all(isinstance(i, str) for i in subset) or not subset:
            raise ParamsError(path, f"{where}.instances", "must be a non-empty list of instance ids")
        values["instances"] = tuple(subset)
    values["options"] = _options(entry.get("options"), kind, values.get("provider"), path, where)
    return ModelConfig(**values)


def _options(raw: Any, kind: str, provider: str | None, path: Path, where: str) -> ModelOptions:
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(path, f"{where}.options", "must be a mapping")
    try:
        options = parse_options(raw, option_groups(kind, provider), _owner(kind, provider))
    except OptionError as exc:
        raise ParamsError(path, f"{where}.options.{exc.key}", exc.problem) from None
    if kind == "import":
        if options.path is None and options.paths is None:
            raise ParamsError(path, f"{where}.options.path", "kind import needs path (or paths: one per attempt)")
        if options.path is not None and options.paths is not None:
            raise ParamsError(path, f"{where}.options.paths", "give path or paths, not both")
    return options


def _owner(kind: str, provider: str | None) -> str:
    spec = AGENTS.get(kind)
    return f"kind {kind}" + (f" with provider {provider}" if spec and spec.needs_model and provider else "")


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
