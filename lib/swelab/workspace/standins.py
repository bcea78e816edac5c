"""Local stand-ins for the network services some repositories' tests call (requests' tests call httpbin).

The official harness runs requests' tests with the internet in reach: they fetch http:// and https://
httpbin.org and follow a redirect to another host. Here they run in the evaluation sandbox (swelab.sandbox.run_eval:
its own network namespace, loopback only), so the eval script starts a stand-in before the tests: the psf
`httpbin` app on 127.0.0.1, port 80 and port 443 (TLS, with a certificate from a CA made for this one evaluation),
and adds the hosts the tests use to the sandbox's private /etc/hosts. The tests trust that CA through a `certifi`
module whose where() names it, put on PYTHONPATH after the worktree (so ahead of an installed certifi, and the
shared environment is not touched): requests takes its CA bundle from certifi when it can import it (a dependency
since 2.16, optional before), also for a bare Session.send, which ignores REQUESTS_CA_BUNDLE. Every other name
fails to resolve at once and every other address is a blackhole (swelab.sandbox.EVAL_NETNS_SETUP and the private
resolv.conf), so the tests still reach nothing beyond loopback. The lines refuse to run outside that sandbox:
they never touch a host's /etc/hosts, and the stand-in dies with the sandbox's pid namespace.

The sandbox sees this one file (read-only), not the swelab package, so it runs as a script:

    python standins.py httpbin --trust-dir DIR    # serve httpbin on 127.0.0.1:80 and :443
    python standins.py wait --port 80 --port 443  # return once both accept connections
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# httpbin.org is what the tests call; www.google.co.uk is where test_auth_is_stripped_on_redirect_off_host
# is redirected to (it needs an answer from another host, not Google's page).
HTTPBIN_HOSTS = ("httpbin.org", "www.httpbin.org", "www.google.co.uk")
HTTP_PORT = 80
HTTPS_PORT = 443
KNOWN = ("httpbin",)

# The first line of the evaluation sandbox's private /etc/hosts (swelab.sandbox.HOSTS_SANDBOX_LINE, repeated
# here so this file needs nothing else when the sandbox runs it): the stand-in lines check it before writing.
SANDBOX_HOSTS_LINE = "# swelab-sandbox: this evaluation's private hosts file"


def service_lines(services: tuple[str, ...], python: str | None = None) -> list[str]:
    """Eval-script lines that start the services and point the tests at them."""
    unknown = [s for s in services if s not in KNOWN]
    if unknown:
        raise ValueError(f"no local stand-in for service {unknown[0]!r} (known: {', '.join(KNOWN)})")
    if not services:
        return []
    py = shlex.quote(python or sys.executable)
    script = shlex.quote(str(Path(__file__).resolve()))
    hosts = " ".join(HTTPBIN_HOSTS)
    return [
        # Only in the evaluation sandbox, whose /etc/hosts is a private copy: never a host's.
        f'head -n 1 /etc/hosts | grep -qxF {shlex.quote(SANDBOX_HOSTS_LINE)} '
        '|| { echo "swelab: the httpbin stand-in runs only inside the evaluation sandbox" >&2; exit 1; }',
        f'echo "127.0.0.1 {hosts}" >> /etc/hosts',
        "swelab_trust=$(mktemp -d)",
        f'{py} {script} httpbin --trust-dir "$swelab_trust" > /dev/null 2>&1 &',
        f"{py} {script} wait --port {HTTP_PORT} --port {HTTPS_PORT}",
        'export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$swelab_trust"',  # last: the worktree still comes first
        # Old requests (before 2.4's certifi fallback) never import certifi: certs.where() is the bundled
        # cacert.pem, and a session with trust_env reads REQUESTS_CA_BUNDLE instead. Only there, so newer
        # versions' tests of that variable see the environment the official image gives them.
        # ("certifi" alone would match the docstring's "certificate")
        'if [ -f requests/certs.py ] && ! grep -qE "(import|from) certifi" requests/certs.py; then '
        'export REQUESTS_CA_BUNDLE="$swelab_trust/certifi/cacert.pem"; fi',
    ]


def make_certificate(hosts: tuple[str, ...], folder: Path) -> tuple[Path, Path, Path]:
    """A CA made for this evaluation and a server certificate it signs for `hosts` and 127.0.0.1.

    Returns (ca.pem, server.pem, server.key). The CA's key is never written: nothing else can be signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swelab stand-in CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host) for host in hosts] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def write_trust(trust_dir: Path, ca_pem: bytes) -> Path:
    """A `certifi` module in `trust_dir` whose where() is the stand-in's CA; returns the CA bundle's path."""
    package = Path(trust_dir) / "certifi"
    package.mkdir(parents=True, exist_ok=True)
    bundle = package / "cacert.pem"
    bundle.write_bytes(ca_pem)
    (package / "__init__.py").write_text(
        '"""swelab stand-in: trust only the CA of this evaluation\'s local httpbin."""\n'
        "import os\n\n"
        "def where():\n    return os.path.join(os.path.dirname(__file__), 'cacert.pem')\n\n"
        "def contents():\n    with open(where()) as handle:\n        return handle.read()\n"
    )
    return bundle


def serve_httpbin(trust_dir: Path, http_port: int = HTTP_PORT, https_port: int = HTTPS_PORT) -> int:
    """Serve httpbin on 127.0.0.1 over HTTP and HTTPS until killed; write the trust module to `trust_dir`.

    Served by gunicorn, as httpbin.org is: HTTP/1.1 with persistent connections (requests' keep-alive tests
    read the Connection header back) and chunked request bodies, which httpbin refuses (501) under any
    other server. One gunicorn per port, because gunicorn's TLS settings cover every address it binds."""
    folder = Path(tempfile.mkdtemp(prefix="swelab-standin-"))  # inside the evaluation's own TMPDIR
    ca, cert, key = make_certificate(HTTPBIN_HOSTS, folder)
    write_trust(trust_dir, ca.read_bytes())
    gunicorn = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", "16",
                "--keep-alive", "30", "--log-level", "warning", "httpbin:app"]
    servers = [
        subprocess.Popen([*gunicorn, "--bind", f"127.0.0.1:{http_port}"]),
        subprocess.Popen([*gunicorn, "--bind", f"127.0.0.1:{https_port}", "--certfile", str(cert),
                          "--keyfile", str(key)]),
    ]
    while all(server.poll() is None for server in servers):
        time.sleep(0.2)
    for server in servers:  # one of them stopped: stop the other, so `wait` does not hang on half a stand-in
        if server.poll() is None:
            server.terminate()
    return max(server.wait() for server in servers)


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
    parser = argparse.ArgumentParser(prog="standins.py", description=__doc__)
    parser.add_argument("command", choices=("httpbin", "wait"))
    parser.add_argument("--port", type=int, action="append", help="wait: a port to wait for (repeatable)")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--https-port", type=int, default=HTTPS_PORT)
    parser.add_argument("--trust-dir", type=Path, help="httpbin: where to write the certifi module to trust")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "httpbin":
        if args.trust_dir is None:
            parser.error("httpbin needs --trust-dir")
        return serve_httpbin(args.trust_dir, args.http_port, args.https_port)
    for port in args.port or [HTTP_PORT]:
        if not wait_for(port, args.timeout):
            print(f"stand-in on 127.0.0.1:{port} did not start within {args.timeout:.0f} s", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
