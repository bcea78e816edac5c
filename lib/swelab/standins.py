"""Local stand-ins for the network services some repositories' tests call (requests' tests call httpbin).

They run inside the evaluation's own network namespace, started by the eval script before the tests, so the
tests still reach nothing beyond loopback: the test hostnames are pointed at 127.0.0.1 through a private
/etc/hosts (a bind mount in the evaluation's own mount namespace) and HTTPBIN_URL names the stand-in.

    python -m swelab.standins httpbin --port 80      # serve httpbin (the psf package) on 127.0.0.1
    python -m swelab.standins wait --port 80         # return once it accepts connections
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
import time

HTTPBIN_HOSTS = ("httpbin.org", "www.httpbin.org")
HTTPBIN_PORT = 80
KNOWN = ("httpbin",)


def service_lines(services: tuple[str, ...], python: str | None = None) -> list[str]:
    """Eval-script lines that start the services and point the tests at them."""
    unknown = [s for s in services if s not in KNOWN]
    if unknown:
        raise ValueError(f"no local stand-in for service {unknown[0]!r} (known: {', '.join(KNOWN)})")
    if not services:
        return []
    py = shlex.quote(python or sys.executable)
    hosts = " ".join(HTTPBIN_HOSTS)
    return [
        # A private /etc/hosts: only possible in the evaluation's own mount namespace, never the host's.
        'swelab_hosts=$(mktemp) && { cat /etc/hosts; echo "127.0.0.1 ' + hosts + '"; } > "$swelab_hosts"'
        ' && mount --bind "$swelab_hosts" /etc/hosts',
        f"{py} -m swelab.standins httpbin --port {HTTPBIN_PORT} > /dev/null 2>&1 &",
        f"{py} -m swelab.standins wait --port {HTTPBIN_PORT}",
        f"export HTTPBIN_URL=http://127.0.0.1:{HTTPBIN_PORT}/",
    ]


def serve_httpbin(port: int) -> None:
    import logging

    from httpbin import app
    from werkzeug.serving import run_simple

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    run_simple("127.0.0.1", port, app, threaded=True)


def wait_for(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swelab.standins", description=__doc__)
    parser.add_argument("command", choices=("httpbin", "wait"))
    parser.add_argument("--port", type=int, default=HTTPBIN_PORT)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "httpbin":
        serve_httpbin(args.port)
        return 0
    if wait_for(args.port, args.timeout):
        return 0
    print(f"stand-in on 127.0.0.1:{args.port} did not start within {args.timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
