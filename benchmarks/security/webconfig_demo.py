"""Attack: bad web config files, and demo mode's admin token and error logging (issue 19, items 10-11).

Web config: each bad ``--web.config.file`` is given to a real exporter
process. Reported per file: the exit code and the first stderr line, or
``running`` when the exporter accepted the file and served; for the header
with CR/LF, also what ``GET /healthz`` then gets (every response failed).

Demo: ``clary-exporter --demo`` with ``CLARY_ADMIN_TOKEN`` set, like
``make run`` (text logs). Reported: the status of ``GET /api/v1/feedback``
without a token, with the public demo admin token and with the configured
one, then the ERROR and traceback lines in ``--seconds`` of demo traffic
(and the demo's deliberate-error lines).

Run against this tree, or ``--tree DIR`` for another checkout (its own
``exporter`` package through PYTHONPATH, nothing written into it)::

    flock /tmp/clary-bench.lock .venv/bin/python -m benchmarks.security.webconfig_demo [--tree DIR] [--seconds 90]
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "attack-operator-admin-token-0123456789"
DEMO_ADMIN_TOKEN = "demo-admin-token-not-a-secret"
SECRET = "attack-hmac-secret-0123456789abcdef"
START_SECONDS = 8.0  # a file the exporter accepted: it is serving by then


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tree: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
    return {**env, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "CLARY_HMAC_SECRET": SECRET, **extra}


def _get(url: str, headers: dict | None = None) -> str:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (OSError, ValueError) as exc:
        return f"failed ({type(exc).__name__})"


def _certificate(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _hash(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$", 1)


def bad_files() -> dict[str, dict]:
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    return {
        "header value with CR/LF": {"http_server_config": {"headers": {
            "Strict-Transport-Security": "max-age=1\r\nSet-Cookie: injected=1"}}},
        "header outside exporter-toolkit's list": {"http_server_config": {"headers": {"Set-Cookie": "a=b"}}},
        "bcrypt cost 4": {"basic_auth_users": {"prometheus": _hash("a-good-password", 4)}},
        "hash of the empty password": {"basic_auth_users": {"prometheus": _hash("", 10)}},
        "RequestClientCert without a CA": {"tls_server_config": {**tls, "client_auth_type": "RequestClientCert"}},
        "missing key file": {"tls_server_config": {**tls, "key_file": "absent.key"}},
    }


def web_config_case(tree: Path, work: Path, name: str, data: dict) -> tuple[str, str]:
    """(exit code or ``running``, first stderr line or what a request got)."""
    path = work / ("".join(c if c.isalnum() else "-" for c in name) + ".yml")
    path.write_text(yaml.safe_dump(data))
    port = _free_port()
    cmd = [sys.executable, "-m", "exporter.cli", "--listen-address", f"127.0.0.1:{port}", "--web.config.file",
           str(path), "--data-dir", str(work / "data"), "--no-collector.gpu", "--no-collector.system"]
    proc = subprocess.Popen(cmd, cwd=work, env=_env(tree), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=START_SECONDS)
        lines = stderr.strip().splitlines()
        return f"exit {proc.returncode}", f"{len(lines)} line(s): {lines[0] if lines else ''}"
    except subprocess.TimeoutExpired:
        scheme = "https" if "tls_server_config" in data else "http"
        probe = _get(f"{scheme}://127.0.0.1:{port}/healthz") if scheme == "http" else "TLS"
        return "running", f"accepted; GET /healthz: {probe}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=15)


def demo_case(tree: Path, work: Path, seconds: float) -> dict[str, str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / "demo.log"
    cmd = [sys.executable, "-m", "exporter.cli", "--demo", "--listen-address", f"127.0.0.1:{port}",
           "--data-dir", str(work / "demo-data"), "--no-collector.gpu"]
    env = _env(tree, CLARY_ADMIN_TOKEN=ADMIN_TOKEN)
    env.pop("CLARY_HMAC_SECRET")  # as make run: the demo's own
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            while _get(f"{base}/readyz") != "200":
                if proc.poll() is not None or time.monotonic() - started > 30:
                    raise SystemExit(f"demo exporter did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            result = {
                "GET /api/v1/feedback, no token": _get(f"{base}/api/v1/feedback"),
                "... public demo admin token": _get(f"{base}/api/v1/feedback",
                                                    {"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"}),
                "... configured admin token": _get(f"{base}/api/v1/feedback",
                                                   {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
            }
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            proc.terminate()
            proc.wait(30)
    lines = log_path.read_text().splitlines()
    result[f"ERROR lines in {seconds:g} s"] = str(sum(" ERROR " in line for line in lines))
    result[f"Traceback lines in {seconds:g} s"] = str(sum(line.startswith("Traceback") for line in lines))
    result[f"deliberate-error lines in {seconds:g} s"] = str(sum("deliberate error" in line for line in lines))
    result["log lines in total"] = str(len(lines))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to attack (default: this one)")
    parser.add_argument("--seconds", type=float, default=90.0, help="demo traffic to watch (default 90, as "
                        "the issue's `make run` observation)")
    parser.add_argument("--skip-demo", action="store_true", help="only the web config files")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    print(f"tree: {tree}")
    with tempfile.TemporaryDirectory(prefix="clary-attack-") as tmp:
        work = Path(tmp)
        _certificate(work)
        for name, data in bad_files().items():
            outcome, detail = web_config_case(tree, work, name, data)
            print(f"web config | {name} | {outcome} | {detail}")
        if not args.skip_demo:
            for name, value in demo_case(tree, work, args.seconds).items():
                print(f"demo | {name} | {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
