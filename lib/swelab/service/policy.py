"""What a submitted params document may ask of the service: its size, no outputs_dir, no local path outside the
allowed roots, and no say over model API keys (the service's own keys, read from its own environment, must
never travel to a URL the request chose)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swelab.params import RunParams
from swelab.registry import PROVIDERS
from swelab.select.dataset import is_local

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_params_bytes: int = 256 * 1024
    """A params document larger than this is refused (413)."""
    max_upload_bytes: int = 64 * MIB
    """A predictions upload larger than this is refused (413)."""


class Refused(ValueError):
    """A submission the service will not run; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_document(raw: dict[str, Any]) -> None:
    """Fields a submission may not set at all, checked before the document is loaded."""
    if "outputs_dir" in raw:
        raise Refused(422, "field 'outputs_dir': the service decides where runs go; remove it")
    models = raw.get("models")
    for i, entry in enumerate(models if isinstance(models, list) else []):
        if not isinstance(entry, dict):
            continue
        if "api_key_env" in entry:
            raise Refused(422, f"field 'models[{i}].api_key_env': the service uses its own key for each provider; "
                               "remove it")
        spec = PROVIDERS.get(entry.get("provider") or "")
        if spec is not None and spec.api_key_env and entry.get("base_url") is not None:
            raise Refused(422, f"field 'models[{i}].base_url': provider {spec.name} is called with the service's "
                               f"key, so only at its own address; remove base_url")


def local_paths(params: RunParams) -> Iterator[tuple[str, Path]]:
    """(field, absolute path) for every local file or folder the loaded params name."""
    source = params.dataset.source
    # a hub name never starts like a path nor names a file here; anything else may be read from disk
    if source != "minibench" and (is_local(source) or source.startswith(("/", ".", "~"))
                                  or params.resolve_path(source).exists()):
        yield "dataset.source", params.resolve_path(source).expanduser()
    if isinstance(params.instances, str) and params.instances != "all":
        yield "instances", params.resolve_path(params.instances)
    for repo, origin in params.repo_sources.items():
        origin = str(origin)
        if origin.startswith("file:"):
            yield f"repo_sources.{repo}", Path(origin.removeprefix("file:").removeprefix("//"))
        elif not _is_url(origin):
            yield f"repo_sources.{repo}", params.resolve_path(origin).expanduser()
    for i, model in enumerate(params.models):
        options = model.options
        named = {"path": options.path, "trajectories": options.trajectories, "mini_config": options.mini_config}
        named.update({f"paths[{k}]": p for k, p in enumerate(options.paths or ())})
        if _gguf_is_path(options.gguf):
            named["gguf"] = options.gguf
        for key, value in named.items():
            if value:
                yield f"models[{i}].options.{key}", params.resolve_path(str(value))


def included_paths(raw: dict[str, Any], project_root: Path) -> Iterator[tuple[str, Path]]:
    """(field, absolute path) of each include_models file: loading the params reads them, so they are checked
    before."""
    includes = raw.get("include_models") or []
    for i, include in enumerate(includes if isinstance(includes, list) else [includes]):
        path = Path(str(include))
        yield f"include_models[{i}]", path if path.is_absolute() else project_root / path


def check_paths(paths: Iterable[tuple[str, Path]], allowed: Iterable[Path]) -> None:
    """Every local path (symlinks followed) lies under one of the allowed roots."""
    roots = [Path(root).resolve() for root in allowed]
    for field_name, path in paths:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            # the message names the field only: the service's own folders are none of the client's business
            raise Refused(422, f"field '{field_name}': names a path outside the folders this service reads from")


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith("git@")


def _gguf_is_path(value: str | None) -> bool:
    """`package:resource` and a bare package name are package data; anything with a folder in it is a path."""
    if not value:
        return False
    package, colon, _ = value.partition(":")
    if colon and package.isidentifier():
        return False
    return "/" in value or value.endswith(".gguf")
