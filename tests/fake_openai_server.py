"""A fault-injecting OpenAI-compatible test server (stdlib only, 127.0.0.1, one thread per request).

Replies are scripted: a queue of reply dicts consumed in order, then `default`, or a `responder(request)`
callable. It records every request (path, headers, JSON body) so tests can check what the client sent.
It also answers ThunderAgent's control routes (/programs/release, /programs, /profiles) and /health.

Concurrency is proven with a barrier, not a stopwatch: `hold_until_in_flight(n)` holds chat requests until n
are in flight at once (then lets them all through); if that never happens within the bound, they fail with 503
and `barrier_error` says how many there were.

Run as a script it is a server process that can die like the embedded one (see `main`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any]


def ok(content: str = "ok", *, usage: dict | None | bool = True, tool_calls: list | None = None,
       finish_reason: str = "stop", delay: float = 0.0) -> Reply:
    return {"kind": "ok", "content": content, "usage": usage, "tool_calls": tool_calls,
            "finish_reason": finish_reason, "delay": delay}


def error(status: int, message: str = "error", *, code: str | None = None,
          headers: dict | None = None) -> Reply:
    return {"kind": "error", "status": status, "message": message, "code": code, "headers": headers or {}}


def slow(seconds: float) -> Reply:
    """Answer only after `seconds`: the client's timeout fires first."""
    return {"kind": "ok", "content": "late", "usage": True, "tool_calls": None, "finish_reason": "stop",
            "delay": seconds}


def hang() -> Reply:
    """Answer only when the server stops: the client's timeout fires first, however slow the machine."""
    return {"kind": "ok", "content": "late", "usage": True, "tool_calls": None, "finish_reason": "stop",
            "hang": True}


def truncated() -> Reply:
    """A 200 whose JSON body is cut in the middle."""
    return {"kind": "truncated"}


class _Server(ThreadingHTTPServer):
    # socketserver's default accept queue is 5: too short for 16 clients at once, where a real server
    # (uvicorn: 2048) would not reset connections; the drop_releases switch stands in for that on purpose.
    request_queue_size = 128


class FakeOpenAIServer:
    def __init__(self, script: list[Reply] | None = None, *, default: Reply | None = None,
                 responder: Callable[[dict], Reply] | None = None, port: int = 0):
        self._port = port
        self._script: deque[Reply] = deque(script or [])
        self.default = default or ok()
        self.responder = responder
        self.requests: list[dict] = []
        self.releases: list[str] = []
        self.programs: Any = {}  # ThunderAgent answers {program_id: state} and {program_id: profile}
        self.profiles: Any = {}
        self.healthy = True
        self.drop_releases = 0  # close this many release connections unanswered and unrecorded (a full queue)
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests being answered at once
        self.barrier: int | None = None  # see hold_until_in_flight
        self.barrier_timeout_s = 60.0
        self.barrier_met = False
        self.barrier_error: str | None = None
        self._barrier_peak = 0
        self.get_routes: dict[str, Callable[[], tuple[str, str]]] = {}  # path -> () -> (content type, text)
        self.on_chat: Callable[[int], None] | None = None  # called with the chat request's number (1, 2, ...)
        self._n_chat = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()  # releases hung requests
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def start(self) -> FakeOpenAIServer:
        server = _Server(("127.0.0.1", self._port), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------------
    def hold_until_in_flight(self, n: int, timeout_s: float = 60.0) -> None:
        """Hold chat requests until `n` are in flight at once, then release them all (later ones pass
        freely). A request still held after `timeout_s` gets a 503, and barrier_error says why."""
        with self._cond:
            self.barrier, self.barrier_timeout_s = n, timeout_s
            self.barrier_met, self.barrier_error, self._barrier_peak = False, None, self.in_flight

    def _enter_chat(self) -> Reply | None:
        """Count a chat request in; wait at the barrier. Returns an error reply when the wait failed."""
        with self._cond:
            self._n_chat += 1
            number = self._n_chat
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.barrier is not None and not self.barrier_met:
                self._barrier_peak = max(self._barrier_peak, self.in_flight)
                if self.in_flight >= self.barrier:
                    self.barrier_met = True
                    self._cond.notify_all()
                elif not self._cond.wait_for(lambda: self.barrier_met, timeout=self.barrier_timeout_s):
                    self.barrier_error = self.barrier_error or (
                        f"at most {self._barrier_peak} of {self.barrier} chat requests were in flight at once "
                        f"within {self.barrier_timeout_s:.0f}s")
                    return error(503, self.barrier_error)
        if self.on_chat is not None:
            self.on_chat(number)
        return None

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self, request: dict) -> Reply:
        if self.responder is not None:
            return self.responder(request)
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _record(self, request: dict) -> None:
        with self._lock:
            self.requests.append(request)
            if request["path"] == "/programs/release":
                self.releases.append((request["body"] or {}).get("program_id"))


def _completion(reply: Reply, body: dict) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if reply.get("tool_calls"):
        message["tool_calls"] = reply["tool_calls"]
    out: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.get("finish_reason", "stop")}],
    }
    usage = reply.get("usage")
    if usage is True:
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        completion = len(str(reply.get("content") or "")) // 4 + 1
        out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                        "total_tokens": prompt + completion}
    elif isinstance(usage, dict):
        out["usage"] = usage
    return out


def _make_handler(fake: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: bytes, headers: dict | None = None,
                  content_type: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

        def _stream(self, completion: dict) -> None:
            """Server-sent events: role, content in three pieces, tool calls, finish, then usage."""
            message = completion["choices"][0]["message"]
            text = message.get("content") or ""
            third = len(text) // 3
            pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
            deltas: list[dict] = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces if p]
            for index, call in enumerate(message.get("tool_calls") or []):
                args = call["function"]["arguments"]
                deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                               "function": {"name": call["function"]["name"],
                                                            "arguments": args[: len(args) // 2]}}]})
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": args[len(args) // 2 :]}}]})
            base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
                    "model": completion["model"]}
            events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
            events.append({**base, "choices": [{"index": 0, "delta": {},
                                                "finish_reason": completion["choices"][0]["finish_reason"]}]})
            if "usage" in completion:
                events.append({**base, "choices": [], "usage": completion["usage"]})
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers)

        def _headers(self) -> dict[str, str]:
            return {key.lower(): value for key, value in self.headers.items()}

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except json.JSONDecodeError:
                return {"_raw": raw.decode(errors="replace")}

        def do_GET(self) -> None:
            fake._record({"method": "GET", "path": self.path, "headers": self._headers(), "body": None})
            if self.path in ("/health", "/v1/models"):
                if not fake.healthy:
                    self._json(503, {"error": "starting"})
                else:
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            elif self.path == "/programs":
                self._json(200, fake.programs)
            elif self.path == "/profiles":
                self._json(200, fake.profiles)
            elif self.path in fake.get_routes:  # e.g. a vLLM stand-in's /metrics
                content_type, text = fake.get_routes[self.path]()
                self._send(200, text.encode(), content_type=content_type)
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path == "/programs/release":
                with fake._lock:
                    drop, fake.drop_releases = fake.drop_releases > 0, max(0, fake.drop_releases - 1)
                if drop:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return  # closed with a reset, before reading or recording anything
            body = self._read_body()
            request = {"method": "POST", "path": self.path, "headers": self._headers(), "body": body}
            fake._record(request)
            if self.path == "/programs/release":
                self._json(200, {"released": (body or {}).get("program_id")})
                return
            if not self.path.endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                reply = fake._enter_chat() or fake._next_reply(request)
                if reply.get("delay"):
                    time.sleep(reply["delay"])
                if reply.get("hang"):
                    fake._stopping.wait(300)
            finally:
                # counted as done before the answer is written: a client may send its next request the
                # moment it reads this one, before this thread would get to run again
                with fake._lock:
                    fake.in_flight -= 1
            self._answer(reply, body)

        def _answer(self, reply: Reply, body: Any) -> None:
            kind = reply["kind"]
            if kind == "ok" and (body or {}).get("stream"):
                self._stream(_completion(reply, body or {}))
            elif kind == "ok":
                self._json(200, _completion(reply, body or {}))
            elif kind == "truncated":
                full = json.dumps(_completion(ok("cut"), body or {})).encode()
                self._send(200, full[: len(full) // 2])
            else:
                err = {"message": reply["message"], "type": "error", "code": reply.get("code")}
                self._json(reply["status"], {"error": err}, reply.get("headers"))

    return Handler


# -- a server process -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """`python fake_openai_server.py --port N [--crash-after K [--signal SEGV]] [--hang-after K]`: serve until
    killed, printing a log line per request. The (K+1)-th chat request kills the process with the signal
    (the embedded server's segfault in mid-generation), or is held forever (for a test to kill it there).
    Other arguments (the llama-cpp server's) are ignored, so it can stand in for that command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--signal", default="SEGV")
    parser.add_argument("--hang-after", type=int, default=None)
    args, _unknown = parser.parse_known_args(argv)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a deliberate crash leaves no core file behind

    def on_chat(number: int) -> None:
        print(f"fake server: chat request {number}", flush=True)
        if args.crash_after is not None and number > args.crash_after:
            print(f"fake server: crashing with SIG{args.signal} in request {number}", flush=True)
            os.kill(os.getpid(), getattr(signal, f"SIG{args.signal}"))
            threading.Event().wait()  # the signal may land on another thread: never answer meanwhile
        if args.hang_after is not None and number > args.hang_after:
            print(f"fake server: holding request {number} until killed", flush=True)
            threading.Event().wait()

    server = FakeOpenAIServer(port=args.port, default=ok("```diff\n```"))
    server.on_chat = on_chat
    server.start()
    print(f"fake server: listening on {server.base_url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Event().wait()


if __name__ == "__main__":
    main()
