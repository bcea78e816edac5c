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
from dataclasses import dataclass
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
THUNDERAGENT_REPOSITORY = "git+https://github.com/ThunderAgent-org/ThunderAgent"
THUNDERAGENT_DEPENDENCIES = ("fastapi", "httpx", "uvicorn")


def thunderagent_command(
    backends: Sequence[str], *, port: int = DEFAULT_THUNDERAGENT_PORT, python: str | None = None,
    host: str | None = None, extra_args: Sequence[str] = THUNDERAGENT_DEFAULTS,
) -> list[str]:
    """ThunderAgent takes backend server roots (`http://host:8000`); it adds the /v1 routes itself.
    Without `host` it binds its own default (0.0.0.0)."""
    if not backends:
        raise ServeError("ThunderAgent needs at least one backend URL")
    roots = [router_root(b) for b in backends]
    cmd = [python or sys.executable, "-m", "ThunderAgent", "--backends", ",".join(roots), "--port", str(port)]
    if host:
        cmd += ["--host", host]
    return cmd + list(extra_args)


def thunderagent_available() -> bool:
    return importlib.util.find_spec("ThunderAgent") is not None


def install_thunderagent(wheel: Path, python: str | None = None) -> None:
    """pip-install a ThunderAgent wheel the user gave (its dependencies come from the package index)."""
    wheel = Path(wheel).expanduser()
    if not wheel.is_file():
        raise ServeError(f"--thunderagent-wheel {wheel}: no such file")
    cmd = [python or sys.executable, "-m", "pip", "install", "--quiet", str(wheel), *THUNDERAGENT_DEPENDENCIES]
    log.info("installing ThunderAgent: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ServeError(f"installing ThunderAgent from {wheel} failed (pip exit {done.returncode}): {tail}")
    importlib.invalidate_caches()


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
            raise ServeError(f"{name} exited with {describe_exit(code)} before becoming healthy" + _log_hint(log_path))
        if probe(url):
            return
        if clock() >= deadline:
            raise ServeError(f"{name} not healthy at {url} after {timeout_s:.0f}s" + _log_hint(log_path))
        sleep(interval_s)


def _log_hint(log_path: Path | None) -> str:
    tail = log_tail(log_path)
    if tail:
        return f" (log {log_path}: {' | '.join(tail)})"
    return f" (log {log_path})" if log_path is not None and Path(log_path).exists() else ""


def log_tail(log_path: Path | None, lines: int = 5) -> list[str]:
    """The last non-empty lines of a log file, each cut at 300 characters ([] when there is none)."""
    if log_path is None or not Path(log_path).is_file():
        return []
    with open(log_path, "rb") as handle:  # a server's log can be long: its end is enough
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
        text = handle.read().decode("utf-8", errors="replace")
    return [line.strip()[:300] for line in text.strip().splitlines() if line.strip()][-lines:]


def describe_exit(code: int) -> str:
    """'code 3', 'signal 11 (SIGSEGV)' (Popen's negative codes), or a shell's 128+N spelled out."""
    if code < 0:
        return f"signal {-code} ({_signal_name(-code)})"
    if code > 128 and _signal_name(code - 128) != "?":
        return f"code {code} (128 + signal {code - 128}, {_signal_name(code - 128)})"
    return f"code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "?"


@dataclass
class ServerProcess:
    """A started server: its process, URL and log. `crashed()` says whether, and how, it died on its own;
    a caller checks it after a failed call, so a dead server is reported as a crash, not as a model gone."""

    name: str
    proc: Any
    base_url: str | None = None
    log_path: Path | None = None
    stopping: bool = False  # set when we stop it ourselves: that exit is no crash

    def returncode(self) -> int | None:
        return self.proc.poll()

    def crashed(self, wait_s: float = 0.0) -> str | None:
        """None while the server runs; else one line: how it exited and the last lines of its log.
        `wait_s` lets a process whose connections just dropped finish dying before we look."""
        code = self.proc.poll()
        if code is None and wait_s > 0:
            try:
                code = self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                code = None
        if code is None or self.stopping:
            return None
        message = f"{self.name} exited with {describe_exit(code)}"
        tail = log_tail(self.log_path)
        if tail:
            message += f"; last log lines: {' | '.join(tail)}"
        if self.log_path is not None:
            message += f" (log {self.log_path})"
        return message


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
    base_url: str | None = None,
    env: dict | None = None,
    popen: Callable[..., Any] = subprocess.Popen,
    **wait_kwargs: Any,
) -> Iterator[ServerProcess]:
    """Start `cmd` in its own process group, wait for health, yield a ServerProcess, always stop it.
    Its output goes to `log_path` (appended; the file is kept), else nowhere."""
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
    server = ServerProcess(name, proc, base_url, Path(log_path) if log_path is not None else None)
    try:
        wait_healthy(proc, health_url, startup_timeout_s, name=name, log_path=log_path, **wait_kwargs)
        yield server
    finally:
        server.stopping = server.returncode() is None  # it dies at our hand from here on
        stop_process(proc)
        if handle:
            handle.close()


# -- ThunderAgent state -----------------------------------------------------------------------------------
# ThunderAgent forgets a program, profile included, the moment it is released: the provider keeps each
# program's last GET /profiles/{id} in its attempt folder under this name, and the run gathers them here.
PROGRAM_PROFILE_FILE = "router_profile.json"


def save_thunderagent_state(base_url: str, run_dir: Path, timeout_s: float = 10.0) -> dict[str, bool]:
    """Save a ThunderAgent's view next to the run; never raises.

    thunderagent/programs.json: GET /programs as answered. thunderagent/profiles.json: {program_id: profile},
    the profiles kept at release (attempt folders' router_profile.json) plus those GET /profiles still holds.
    An answer of another shape is logged and kept verbatim in profiles.unexpected.json."""
    root = router_root(base_url)
    out_dir = Path(run_dir) / "thunderagent"
    saved = {}
    programs = _get_json(f"{root}/programs", timeout_s)
    if programs is not None:
        write_json(out_dir / "programs.json", programs)
    saved["programs"] = programs is not None
    profiles = released_profiles(Path(run_dir))
    live = _get_json(f"{root}/profiles", timeout_s)
    if isinstance(live, dict) and all(isinstance(v, dict) for v in live.values()):
        profiles.update({str(pid): profile for pid, profile in live.items()})
    elif live is not None:
        log.warning("ThunderAgent /profiles at %s answered %s, not {program_id: profile}: kept in %s",
                    root, type(live).__name__, out_dir / "profiles.unexpected.json")
        write_json(out_dir / "profiles.unexpected.json", live)
    if live is not None or profiles:
        write_json(out_dir / "profiles.json", profiles)
    saved["profiles"] = live is not None or bool(profiles)
    return saved


def router_root(base_url: str) -> str:
    """A router's server root: its control routes (/programs, /profiles) are not under /v1."""
    return base_url.rstrip("/").removesuffix("/v1")


def released_profiles(run_dir: Path) -> dict[str, dict]:
    """{program_id: profile} from the attempt folders' router_profile.json files (unreadable ones skipped)."""
    found: dict[str, dict] = {}
    for path in sorted((Path(run_dir) / "cells").rglob(PROGRAM_PROFILE_FILE)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if isinstance(data, dict) and isinstance(data.get("program_id"), str):
            found[data["program_id"]] = {k: v for k, v in data.items() if k != "program_id"}
        else:
            log.warning("skipping %s: not an object with a program_id", path)
    return found


def _get_json(url: str, timeout_s: float) -> Any:
    """The JSON of a 2xx answer, or None (logged) when there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("could not read ThunderAgent %s: %s", url, exc)
        return None


# -- CLI --------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swelab serve", description="Serve a model with vLLM (+ ThunderAgent).")
    p.add_argument("model", help="the Hugging Face model id or local path vLLM serves")
    p.add_argument("--tp", "--tensor-parallel-size", dest="tp", type=int, default=1)
    p.add_argument("--tool-call-parser", default="hermes", help="vLLM tool-call parser ('' to disable)")
    p.add_argument("--host", default="127.0.0.1", help="where vLLM and ThunderAgent listen")
    p.add_argument("--port", type=int, default=DEFAULT_VLLM_PORT)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--thunderagent", action="store_true", help="put ThunderAgent in front of vLLM")
    p.add_argument("--thunderagent-wheel", type=Path, default=None,
                   help="install ThunderAgent from this wheel first (default: the installed one, from "
                   f"pip install {THUNDERAGENT_REPOSITORY})")
    p.add_argument("--backends", default=None, help="comma-separated backend URLs for ThunderAgent "
                   "(default: the vLLM started here)")
    p.add_argument("--ta-port", type=int, default=DEFAULT_THUNDERAGENT_PORT)
    p.add_argument("--startup-timeout", type=float, default=1800.0)
    p.add_argument("--log-dir", type=Path, default=Path("outputs/serve"))
    p.add_argument("--dry-run", action="store_true", help="print the command lines and exit")
    return p


def serve_main(argv: Sequence[str] | None = None, *, sleep: Callable[[float], None] = time.sleep) -> int:
    args = _parser().parse_args(argv)
    vllm = vllm_command(args.model, tensor_parallel_size=args.tp, tool_call_parser=args.tool_call_parser or None,
                        port=args.port, host=args.host, served_model_name=args.served_model_name)
    vllm_url = f"http://{args.host}:{args.port}"
    backends = args.backends.split(",") if args.backends else [vllm_url]
    # per-step profiles also go to a CSV; keep it with the logs rather than in /tmp
    ta_args = (*THUNDERAGENT_DEFAULTS, "--profile-dir", str((args.log_dir / "thunderagent-profiles").resolve()))
    ta = (thunderagent_command(backends, port=args.ta_port, host=args.host, extra_args=ta_args)
          if args.thunderagent else None)
    if args.dry_run:
        print(" ".join(vllm))
        if ta:
            print(" ".join(ta))
        return 0
    if ta and args.thunderagent_wheel:
        try:
            install_thunderagent(args.thunderagent_wheel)
        except ServeError as exc:
            print(f"swelab serve: {exc}", file=sys.stderr)
            return 2
    if ta and not thunderagent_available():
        print(f"ThunderAgent is not installed: pip install {THUNDERAGENT_REPOSITORY}, or give "
              "--thunderagent-wheel PATH (or serve without --thunderagent).", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        servers = []
        try:
            if not args.backends:
                servers.append(stack.enter_context(managed_process(
                    vllm, vllm_url + "/health", name="vllm", startup_timeout_s=args.startup_timeout,
                    log_path=args.log_dir / "vllm.log", base_url=vllm_url + "/v1")))
                print(f"vLLM ready: {vllm_url}/v1", flush=True)
            if ta:
                ta_url = f"http://{args.host}:{args.ta_port}"
                servers.append(stack.enter_context(managed_process(
                    ta, ta_url + "/health", name="ThunderAgent", startup_timeout_s=120,
                    log_path=args.log_dir / "thunderagent.log", base_url=ta_url + "/v1")))
                print(f"ThunderAgent ready: {ta_url}/v1 (provider: thunderagent, base_url: {ta_url}/v1)", flush=True)
        except ServeError as exc:
            print(f"swelab serve: {exc}", file=sys.stderr)
            return 1
        try:
            crash = watch(servers, sleep=sleep)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
            return 0
        print(f"swelab serve: {crash}", file=sys.stderr)
        return 1


def watch(servers: Sequence[ServerProcess], *, sleep: Callable[[float], None] = time.sleep,
          interval_s: float = 2.0) -> str:
    """Block until one of the servers dies; returns what `crashed()` says about it."""
    while True:
        for server in servers:
            crash = server.crashed()
            if crash:
                return crash
        sleep(interval_s)


if __name__ == "__main__":
    raise SystemExit(serve_main())
