"""`swelab serve`: self-host a model with vLLM, optionally behind ThunderAgent, with a health wait and a
clean stop; plus the small process helpers the embedded local model reuses.

    swelab serve Qwen/Qwen3-Coder-30B-A3B-Instruct --tp 2 --tool-call-parser qwen3_coder --port 8000 \
        --thunderagent --ta-port 9000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from swelab.io import write_json

log = logging.getLogger(__name__)

DEFAULT_VLLM_PORT = 8000
DEFAULT_THUNDERAGENT_PORT = 9000


class ServeError(RuntimeError):
    """A server that could not be started or did not become healthy; the message says why."""


# -- command lines --------------------------------------------------------------------------------------
def vllm_command(
    model: str,
    *,
    tensor_parallel_size: int = 1,
    tool_call_parser: str | None = "hermes",
    port: int = DEFAULT_VLLM_PORT,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = ["vllm", "serve", model, "--tensor-parallel-size", str(tensor_parallel_size)]
    if tool_call_parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", tool_call_parser]
    cmd += ["--host", host, "--port", str(port)]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    return cmd + list(extra_args)


# What the ThunderAgent guide runs: capacity scheduling ("tr") needs --metrics; the analysis wants --profile
# (per-program prefill, decode, pause and tool time at GET /profiles).
THUNDERAGENT_DEFAULTS = ("--backend-type", "vllm", "--router", "tr", "--metrics", "--profile")


def thunderagent_command(
    backends: Sequence[str], *, port: int = DEFAULT_THUNDERAGENT_PORT, python: str | None = None,
    extra_args: Sequence[str] = THUNDERAGENT_DEFAULTS,
) -> list[str]:
    """ThunderAgent takes backend server roots (`http://host:8000`); it adds the /v1 routes itself."""
    if not backends:
        raise ServeError("ThunderAgent needs at least one backend URL")
    roots = [b.rstrip("/").removesuffix("/v1") for b in backends]
    return [python or sys.executable, "-m", "ThunderAgent", "--backends", ",".join(roots), "--port", str(port),
            *extra_args]


def thunderagent_available() -> bool:
    return importlib.util.find_spec("ThunderAgent") is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- process lifecycle ----------------------------------------------------------------------------------
def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(
    proc: Any,
    url: str,
    timeout_s: float,
    *,
    probe: Callable[[str], bool] = http_ok,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    interval_s: float = 0.5,
    name: str = "server",
    log_path: Path | None = None,
) -> None:
    """Poll `url` until it answers 2xx; fail early if the process dies, or after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise ServeError(f"{name} exited with code {code} before becoming healthy" + _log_hint(log_path))
        if probe(url):
            return
        if clock() >= deadline:
            raise ServeError(f"{name} not healthy at {url} after {timeout_s:.0f}s" + _log_hint(log_path))
        sleep(interval_s)


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not Path(log_path).exists():
        return ""
    tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-5:]
    return f" (log {log_path}: {' | '.join(tail)})" if tail else f" (log {log_path})"


def stop_process(proc: Any, grace_s: float = 10.0) -> int | None:
    """SIGTERM the server's process group, then SIGKILL after `grace_s`; returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    # Only a real child started in its own session owns a process group we may signal as a whole
    # (uvicorn/vLLM workers die with it); anything else is asked through its own methods.
    group = isinstance(proc, subprocess.Popen)
    _signal(proc, signal.SIGTERM, group)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, group)
        return proc.wait(timeout=grace_s)


def _signal(proc: Any, sig: int, group: bool) -> None:
    if group:
        try:
            os.killpg(proc.pid, sig)
            return
        except (ProcessLookupError, PermissionError, OSError):
            pass
    if sig == signal.SIGKILL:
        proc.kill()
    else:
        proc.terminate()


@contextmanager
def managed_process(
    cmd: Sequence[str],
    health_url: str,
    *,
    name: str,
    startup_timeout_s: float = 600.0,
    log_path: Path | None = None,
    env: dict | None = None,
    popen: Callable[..., Any] = subprocess.Popen,
    **wait_kwargs: Any,
) -> Iterator[Any]:
    """Start `cmd` in its own process group, wait for health, yield the process, always stop it."""
    stream: TextIO | int = subprocess.DEVNULL
    handle = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
        stream = handle
    log.info("starting %s: %s", name, " ".join(cmd))
    try:
        proc = popen(list(cmd), stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True, env=env)
    except OSError as exc:
        if handle:
            handle.close()
        raise ServeError(f"{name}: cannot start {cmd[0]!r}: {exc}") from exc
    try:
        wait_healthy(proc, health_url, startup_timeout_s, name=name, log_path=log_path, **wait_kwargs)
        yield proc
    finally:
        stop_process(proc)
        if handle:
            handle.close()


# -- ThunderAgent state -----------------------------------------------------------------------------------
def save_thunderagent_state(base_url: str, run_dir: Path, timeout_s: float = 10.0) -> dict[str, bool]:
    """Save GET /programs and GET /profiles of a ThunderAgent next to the run; never raises."""
    from swelab.generate.providers.profiles import server_root

    root = server_root(base_url)
    out_dir = Path(run_dir) / "thunderagent"
    saved = {}
    for route in ("programs", "profiles"):
        try:
            with urllib.request.urlopen(f"{root}/{route}", timeout=timeout_s) as response:
                data = json.loads(response.read().decode("utf-8"))
            write_json(out_dir / f"{route}.json", data)
            saved[route] = True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("could not save ThunderAgent /%s from %s: %s", route, root, exc)
            saved[route] = False
    return saved


# -- CLI --------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swelab serve", description="Serve a model with vLLM (+ ThunderAgent).")
    p.add_argument("model", help="the Hugging Face model id or local path vLLM serves")
    p.add_argument("--tp", "--tensor-parallel-size", dest="tp", type=int, default=1)
    p.add_argument("--tool-call-parser", default="hermes", help="vLLM tool-call parser ('' to disable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_VLLM_PORT)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--thunderagent", action="store_true", help="put ThunderAgent in front of vLLM")
    p.add_argument("--backends", default=None, help="comma-separated backend URLs for ThunderAgent "
                   "(default: the vLLM started here)")
    p.add_argument("--ta-port", type=int, default=DEFAULT_THUNDERAGENT_PORT)
    p.add_argument("--startup-timeout", type=float, default=1800.0)
    p.add_argument("--log-dir", type=Path, default=Path("outputs/serve"))
    p.add_argument("--dry-run", action="store_true", help="print the command lines and exit")
    return p


def serve_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    vllm = vllm_command(args.model, tensor_parallel_size=args.tp, tool_call_parser=args.tool_call_parser or None,
                        port=args.port, host=args.host, served_model_name=args.served_model_name)
    vllm_url = f"http://{args.host}:{args.port}"
    backends = args.backends.split(",") if args.backends else [vllm_url]
    ta = thunderagent_command(backends, port=args.ta_port) if args.thunderagent else None
    if args.dry_run:
        print(" ".join(vllm))
        if ta:
            print(" ".join(ta))
        return 0
    if ta and not thunderagent_available():
        print("ThunderAgent is not installed (python -m ThunderAgent not importable); serve without "
              "--thunderagent or install it.", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        try:
            if not args.backends:
                stack.enter_context(managed_process(vllm, vllm_url + "/health", name="vllm",
                                                    startup_timeout_s=args.startup_timeout,
                                                    log_path=args.log_dir / "vllm.log"))
                print(f"vLLM ready: {vllm_url}/v1", flush=True)
            if ta:
                ta_url = f"http://127.0.0.1:{args.ta_port}"
                stack.enter_context(managed_process(ta, ta_url + "/health", name="ThunderAgent",
                                                    startup_timeout_s=120, log_path=args.log_dir / "thunderagent.log"))
                print(f"ThunderAgent ready: {ta_url}/v1 (provider: thunderagent, base_url: {ta_url}/v1)", flush=True)
        except ServeError as exc:
            print(f"swelab serve: {exc}", file=sys.stderr)
            return 1
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(serve_main())
