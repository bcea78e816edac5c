"""Programs: one (model, instance, attempt) = one program. For ThunderAgent every request carries the
program_id and the program is released exactly once when the attempt ends, however it ends."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swelab.generate.providers.client import ChatClient
from swelab.generate.providers.errors import one_line, redact
from swelab.generate.providers.profiles import Endpoint, read_api_key, resolve_endpoint, server_root

log = logging.getLogger(__name__)
RELEASE_TIMEOUT_S = 10.0


def program_id_for(model_name: str, instance_id: str, attempt: int) -> str:
    """f"{model}:{instance}:{attempt}" with anything outside [A-Za-z0-9._-] (e.g. '/') made '-'."""
    def clean(part: object) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-") or "x"

    return f"{clean(model_name)}:{clean(instance_id)}:{clean(attempt)}"


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
    program_id = program_id_for(getattr(model, "name", "model"), instance_id, attempt)
    client = ChatClient(
        model, endpoint, Path(cell_dir) / "calls.jsonl", instance_id, attempt, program_id, **client_kwargs
    )
    try:
        yield client
    finally:
        if endpoint.profile.programs:
            ok, message = release_program(endpoint, program_id, getattr(model, "name", "?"))
            client.release_status = {"ok": ok, "message": message}
