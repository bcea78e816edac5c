"""Programs: one (model, instance, attempt) = one program. For ThunderAgent every request carries the
program_id and the program is released exactly once when the attempt ends, however it ends."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swelab.generate.providers.client import ChatClient
from swelab.generate.providers.errors import one_line, redact
from swelab.generate.providers.profiles import Endpoint, read_api_key, resolve_endpoint, server_root
from swelab.generate.serve import PROGRAM_PROFILE_FILE
from swelab.io import write_json

log = logging.getLogger(__name__)
RELEASE_TIMEOUT_S = 10.0


def program_id_for(model_name: str, instance_id: str, attempt: int, run: str | None = None) -> str:
    """f"{model}:{instance}:{attempt}:{run}" with anything outside [A-Za-z0-9._-] (e.g. '/') made '-'. `run`
    tells apart two executions of the same attempt (a redo, a resumed run): a router must never see a program
    id that was already released."""
    def clean(part: object) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-") or "x"

    base = f"{clean(model_name)}:{clean(instance_id)}:{clean(attempt)}"
    return f"{base}:{clean(run)}" if run else base


def release_program(endpoint: Endpoint, program_id: str, model_name: str = "?") -> tuple[bool, str]:
    """POST <base without /v1>/programs/release {"program_id": ...}; never raises (the attempt is over).

    A connection that ends with no answer (refused, reset: a router's full accept queue under load) is tried
    again within RELEASE_TIMEOUT_S: a program left unreleased keeps its place in the router's scheduling,
    while a second release of one the router did see only finds it gone. An HTTP answer, whatever its
    status, is final; so is a timeout (the router may still be working on it)."""
    url = server_root(endpoint.base_url) + "/programs/release"
    body = json.dumps({"program_id": program_id}).encode()
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    pause = 0.2
    while True:
        try:
            key = read_api_key(endpoint, model_name)
            if key != "EMPTY":
                headers["Authorization"] = f"Bearer {key}"
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            timeout = max(0.5, deadline - time.monotonic())
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return True, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code}"
            break
        except (ConnectionError, urllib.error.URLError) as exc:
            message = one_line(redact(exc))
            if time.monotonic() + pause >= deadline or not _never_answered(exc):
                break
            time.sleep(pause)
            pause *= 2
        except Exception as exc:  # noqa: BLE001 - a failed release is logged, not fatal
            message = one_line(redact(exc))
            break
    log.warning("release of program %s at %s failed: %s", program_id, url, message)
    return False, message


def fetch_program_profile(endpoint: Endpoint, program_id: str, model_name: str = "?") -> dict | None:
    """GET <base without /v1>/profiles/<program_id>: the router's per-program timing (step_count, avg_prefill_s,
    avg_decode_s, avg_pause_s, avg_tool_call_s, avg_kv_hit_rate), or None (profiling off: 400; unknown: 404;
    no answer). Read just before the release, since ThunderAgent forgets a released program's profile."""
    url = server_root(endpoint.base_url) + "/profiles/" + urllib.parse.quote(program_id, safe="")
    try:
        key = read_api_key(endpoint, model_name)
        headers = {"Authorization": f"Bearer {key}"} if key != "EMPTY" else {}
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=RELEASE_TIMEOUT_S) as response:
            data = json.loads(response.read().decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - a profile we cannot read is only missing from the analysis
        log.debug("no profile for program %s at %s: %s", program_id, url, one_line(redact(exc)))
        return None
    return data if isinstance(data, dict) else None


def _never_answered(exc: BaseException) -> bool:
    """True when the connection was refused, reset, broken or closed with no answer at all (not a timeout)."""
    return isinstance(getattr(exc, "reason", exc), ConnectionError)  # RemoteDisconnected is one too


@contextmanager
def open_program(
    model: Any, cell_dir: Path, instance_id: str, attempt: int, **client_kwargs: Any
) -> Iterator[ChatClient]:
    """Yield the ChatClient of one attempt; calls go to cell_dir/calls.jsonl. On exit (success, exception
    or timeout) a ThunderAgent program is released exactly once."""
    endpoint = resolve_endpoint(model)
    program_id = program_id_for(getattr(model, "name", "model"), instance_id, attempt, uuid.uuid4().hex[:8])
    client = ChatClient(
        model, endpoint, Path(cell_dir) / "calls.jsonl", instance_id, attempt, program_id, **client_kwargs
    )
    try:
        yield client
    finally:
        if endpoint.profile.programs:
            profile = fetch_program_profile(endpoint, program_id, getattr(model, "name", "?"))
            if profile is not None:  # gathered into thunderagent/profiles.json by save_thunderagent_state
                write_json(Path(cell_dir) / PROGRAM_PROFILE_FILE, {"program_id": program_id, **profile})
            ok, message = release_program(endpoint, program_id, getattr(model, "name", "?"))
            client.release_status = {"ok": ok, "message": message}
