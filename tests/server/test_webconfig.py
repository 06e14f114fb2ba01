"""TLS and basic auth (``--web.config.file``): the file, then real HTTPS.

Certificates are made per session with the ``cryptography`` package: a CA,
a server certificate for 127.0.0.1 signed by it, and a client certificate
for mutual TLS. Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exporter import demo
from exporter.server import webconfig
from exporter.config import Config
from tests import support

USER, PASSWORD = "prometheus", "s3cret-scrape-password"
SECRET_ENV = {"CLARY_HMAC_SECRET": "test-secret-0123456789abcdef"}


# --- certificates --------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(subject: str, issuer_name, issuer_key, *, ca: bool, key=None, san=None, usage=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("clary test CA", None, None, ca=True)
    server_cert, server_key = _issue(
        "127.0.0.1", ca_cert.subject, ca_key, ca=False,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client_cert, client_key = _issue("scraper", ca_cert.subject, ca_key, ca=False,
                                     usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    other_ca, _ = _issue("some other CA", None, None, ca=True)
    files = {}
    for name, cert in (("ca", ca_cert), ("server", server_cert), ("client", client_cert), ("other-ca", other_ca)):
        files[f"{name}.crt"] = d / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for name, key in (("server", server_key), ("client", client_key)):
        files[f"{name}.key"] = d / f"{name}.key"
        _write_key(key, files[f"{name}.key"])
    return files


def _hash(password: str, cost: int = 10) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$", 1)


def _web_config(tmp_path: Path, pki: dict[str, Path], **extra) -> Path:
    """A web config next to copies of the server cert/key, referenced relatively."""
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes(pki[name].read_bytes())
    data = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {USER: _hash(PASSWORD)},
        **extra,
    }
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _https(url: str, context: ssl.SSLContext, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _client_context(pki, cert: bool = False, ca: str = "ca.crt") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki[ca]))
    if cert:
        context.load_cert_chain(pki["client.crt"], pki["client.key"])
    return context


# --- the file --------------------------------------------------------------------


def test_load_resolves_paths_relative_to_the_file(tmp_path, pki):
    config = webconfig.load(_web_config(tmp_path, pki))
    assert config.tls_server_config.cert_file == tmp_path / "server.crt"
    assert config.tls_server_config.key_file == tmp_path / "server.key"
    assert set(config.basic_auth_users) == {USER}
    context = webconfig.ssl_context(config)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and context.verify_mode == ssl.CERT_NONE


def test_empty_file_means_plain_http_without_auth(tmp_path):
    (tmp_path / "web.yml").write_text("")
    config = webconfig.load(tmp_path / "web.yml")
    assert webconfig.ssl_context(config) is None and webconfig.middlewares(config) == []


@pytest.mark.parametrize("data, message", [
    ({"basic_auth_users": {"u": "plain-password"}}, "basic_auth_users: Value error, basic_auth_users.u: expected a bcrypt hash"),
    ({"basic_auth_user": {}}, "basic_auth_user: Extra inputs are not permitted"),
    ({"tls_server_config": {"cert_file": "a.crt"}}, "tls_server_config.key_file: Field required"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "client_auth_type": "RequireAndVerifyClientCert"}},
     "needs client_ca_file"),
    ({"tls_server_config": {"cert_file": "a", "key_file": "b", "min_version": "TLS10"}},
     "tls_server_config.min_version: Input should be 'TLS12' or 'TLS13'"),
    ({"http_server_config": {"headers": {"WWW-Authenticate": "x"}}}, "cannot be configured"),
    (["not", "a", "mapping"], "expected a mapping"),
])
def test_bad_files_are_one_line_errors(tmp_path, data, message):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(webconfig.WebConfigError) as info:
        webconfig.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"web config file {path}: ")


def test_missing_certificate_is_reported_by_name(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "nope.crt", "key_file": "nope.key"}}))
    with pytest.raises(webconfig.WebConfigError, match="cert_file: .*nope.crt: no such file"):
        webconfig.load(path)


def test_credentials_parsing():
    parse = webconfig.BasicAuth.credentials
    assert parse(_auth("a", "b:c")["Authorization"]) == ("a", "b:c")
    assert parse("basic " + base64.b64encode(b"x:").decode()) == ("x", "")
    for header in (None, "", "Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                   "Basic " + base64.b64encode(b"\xff:\xfe").decode()):
        assert parse(header) is None, header


def test_which_paths_basic_auth_covers():
    assert webconfig.needs_auth("/metrics") and webconfig.needs_auth("/") and webconfig.needs_auth("/api")
    assert webconfig.needs_auth("//metrics") and webconfig.needs_auth("/metrics/")
    for open_path in ("/healthz", "/readyz", "/api/v1/events", "/demo/api/v1/documents"):
        assert not webconfig.needs_auth(open_path), open_path


# --- basic auth in the app (in-process) ------------------------------------------------


async def test_basic_auth_in_the_app(aiohttp_client, tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {USER: _hash(PASSWORD)},
                                    "http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))
    web_config = webconfig.load(path)
    app = demo.create_app(Config(demo=True, collectors={"system": False, "gpu": False}, data_dir=tmp_path / "data"),
                          web_config=web_config)
    client = await aiohttp_client(app)

    resp = await client.get("/metrics")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Basic realm="clary-exporter"')
    assert resp.headers["X-Frame-Options"] == "deny"
    assert (await resp.json())["error"] == "unauthorized"
    for user, password in ((USER, "wrong"), ("nobody", PASSWORD), (USER, "")):
        resp = await client.get("/metrics", headers=_auth(user, password))
        assert resp.status == 401, (user, password)
    resp = await client.get("/metrics", headers=_auth(USER, PASSWORD))
    assert resp.status == 200 and "clary_exporter_build_info" in await resp.text()
    assert resp.headers["X-Frame-Options"] == "deny"
    # Twice more: served from the cache, same answers.
    assert (await client.get("/metrics", headers=_auth(USER, PASSWORD))).status == 200
    assert (await client.get("/metrics", headers=_auth(USER, "wrong"))).status == 401
    # Landing page and unknown paths are covered; probes and the APIs with their own credentials are not.
    assert (await client.get("/")).status == 401
    assert (await client.get("/nope")).status == 401
    assert (await client.get("/nope", headers=_auth(USER, PASSWORD))).status == 404
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    resp = await client.get("/demo/api/v1/documents", headers={"X-API-Key": "demo-lite-key"})
    assert resp.status not in (401, 403)
    # A path that merely starts below an open prefix never reaches /metrics.
    resp = await client.get("/api/../metrics")
    assert resp.status in (401, 404) and b"clary_exporter_build_info" not in await resp.read()


# --- real HTTPS: the exporter process ----------------------------------------------------


@pytest.fixture(scope="module")
def tls_exporter(tmp_path_factory, pki):
    d = tmp_path_factory.mktemp("tls")
    web = _web_config(d, pki, http_server_config={"headers": {"Strict-Transport-Security": "max-age=31536000"}})
    port = support.free_port()
    cmd = support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{port}", "--web.config.file", str(web),
                               "--no-collector.gpu")
    proc = subprocess.Popen(cmd, cwd=support.ROOT, env={**os.environ, **SECRET_ENV}, stdin=subprocess.DEVNULL,
                            stdout=open(d / "exporter.log", "wb"), stderr=subprocess.STDOUT)
    base = f"https://{support.LOOPBACK}:{port}"
    context = _client_context(pki)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError((d / "exporter.log").read_text()[-2000:])
            try:
                return _https(f"{base}/readyz", context)[0] == 200
            except (OSError, http.client.HTTPException):
                return False

        support.wait_until(up, timeout=30, what="TLS exporter")
        yield base, port, web, d
    finally:
        support.stop(proc)


def test_https_with_correct_password_serves_metrics(tls_exporter, pki):
    base, *_ = tls_exporter
    status, body, headers = _https(f"{base}/metrics", _client_context(pki), _auth(USER, PASSWORD))
    assert status == 200
    assert b"clary_exporter_build_info" in body and b"clary_http_requests_total" in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"


def test_https_with_wrong_password_is_401(tls_exporter, pki):
    base, *_ = tls_exporter
    for headers in (_auth(USER, "wrong-password"), _auth("admin", "admin"), {}):
        status, body, response_headers = _https(f"{base}/metrics", _client_context(pki), headers)
        assert status == 401, headers
        assert b"clary_" not in body
        assert response_headers["WWW-Authenticate"].startswith("Basic ")


def test_probes_stay_open_over_https(tls_exporter, pki):
    base, *_ = tls_exporter
    assert _https(f"{base}/healthz", _client_context(pki))[0] == 200
    assert _https(f"{base}/readyz", _client_context(pki))[0] == 200


def test_container_healthcheck_speaks_https_to_a_tls_exporter(tls_exporter):
    _, port, web, _ = tls_exporter
    env = {**os.environ, "CLARY_LISTEN_ADDRESS": f"0.0.0.0:{port}", "CLARY_WEB_CONFIG_FILE": str(web)}
    probe = subprocess.run([sys.executable, "-m", "exporter.server.healthcheck"], cwd=support.ROOT, env=env,
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0 and probe.stdout.strip() == "healthy", probe.stderr
    env.pop("CLARY_WEB_CONFIG_FILE")  # plain HTTP against the TLS port: unhealthy
    probe = subprocess.run([sys.executable, "-m", "exporter.server.healthcheck"], cwd=support.ROOT, env=env,
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 1 and "unhealthy" in probe.stderr


def test_plain_http_is_refused_when_tls_is_required(tls_exporter):
    _, port, *_ = tls_exporter
    with pytest.raises((OSError, http.client.HTTPException)):
        # Credentials are right; the transport is not.
        support.http_get(f"http://{support.LOOPBACK}:{port}/metrics", headers=_auth(USER, PASSWORD))
    conn = http.client.HTTPConnection(support.LOOPBACK, port, timeout=5)
    try:
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/healthz")
            conn.getresponse().read()
    finally:
        conn.close()


def test_client_that_does_not_trust_the_certificate_fails_the_handshake(tls_exporter, pki):
    base, *_ = tls_exporter
    with pytest.raises(urllib.error.URLError) as info:
        _https(f"{base}/metrics", _client_context(pki, ca="other-ca.crt"), _auth(USER, PASSWORD))
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_prometheus_scrapes_over_tls_with_basic_auth(tls_exporter, pki, tmp_path):
    """The scrape config documented in docs/deployment.md, on a real Prometheus."""
    _, port, _, d = tls_exporter
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "wrong").write_text("not-the-password")
    jobs = [
        {"job_name": name, "scheme": "https", "scrape_interval": "1s", "scrape_timeout": "1s",
         "tls_config": {"ca_file": str(pki["ca.crt"])},
         "basic_auth": {"username": USER, "password_file": str(tmp_path / secret)},
         "static_configs": [{"targets": [f"{support.LOOPBACK}:{port}"]}]}
        for name, secret in (("clary-exporter", "password"), ("clary-exporter-wrong", "wrong"))
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": jobs}))
    prom_port = support.free_port()
    url = f"http://{support.LOOPBACK}:{prom_port}"
    cmd = [support.binary("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
           f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address={support.LOOPBACK}:{prom_port}"]
    with support.running(cmd, f"{url}/-/ready", log_path=tmp_path / "prometheus.log"):
        prom = support.Prometheus(url, tmp_path)
        support.wait_until(lambda: prom.query('up{job="clary-exporter"} == 1'), timeout=30, what="TLS scrape")
        assert prom.query('clary_exporter_build_info{job="clary-exporter"}')[0]["value"][1] == "1"

        def wrong_scraped():
            targets = prom.api("targets")["activeTargets"]
            wrong = next(t for t in targets if t["labels"]["job"] == "clary-exporter-wrong")
            return wrong if wrong["health"] == "down" else None

        wrong = support.wait_until(wrong_scraped, timeout=30, what="scrape with the wrong password")
        assert "401" in wrong["lastError"]


# --- mutual TLS, TLS versions, the CLI -------------------------------------------------


def _run_exporter(tmp_path: Path, web: Path, env: dict | None = None):
    port = support.free_port()
    args = ["--listen-address", f"{support.LOOPBACK}:{port}", "--no-collector.gpu", "--no-collector.system"]
    if env is None:
        args += ["--web.config.file", str(web)]
    proc = subprocess.Popen(support.exporter_cmd(*args), cwd=support.ROOT,
                            env={**os.environ, **SECRET_ENV, **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=open(tmp_path / "exporter.log", "wb"), stderr=subprocess.STDOUT)
    return proc, port


def _wait_listening(proc, port, tmp_path):
    import socket

    def listening():
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "exporter.log").read_text()[-2000:])
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex((support.LOOPBACK, port)) == 0

    support.wait_until(listening, timeout=30, what="exporter listening")


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki):
    web = _web_config(tmp_path, pki, tls_server_config={
        "cert_file": "server.crt", "key_file": "server.key",
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "ca.crt", "min_version": "TLS13"})
    # CLARY_WEB_CONFIG_FILE instead of the flag.
    proc, port = _run_exporter(tmp_path, web, env={"CLARY_WEB_CONFIG_FILE": str(web)})
    try:
        _wait_listening(proc, port, tmp_path)
        base = f"https://{support.LOOPBACK}:{port}"
        status, body, _ = _https(f"{base}/metrics", _client_context(pki, cert=True), _auth(USER, PASSWORD))
        assert status == 200 and b"clary_exporter_build_info" in body
        with pytest.raises((OSError, http.client.HTTPException)):  # no client certificate
            _https(f"{base}/metrics", _client_context(pki), _auth(USER, PASSWORD))
        old = _client_context(pki, cert=True)
        old.maximum_version = ssl.TLSVersion.TLSv1_2  # min_version TLS13
        with pytest.raises((OSError, http.client.HTTPException)):
            _https(f"{base}/metrics", old, _auth(USER, PASSWORD))
    finally:
        support.stop(proc)


@pytest.mark.parametrize("args, message", [
    (["--demo"], "--demo sends its traffic over plain loopback HTTP; it cannot run with TLS"),
    (["--web.config.file", "/nonexistent/web.yml"], "web config file /nonexistent/web.yml: No such file"),
])
def test_cli_errors_are_one_line(tmp_path, pki, args, message):
    web = _web_config(tmp_path, pki)
    full = ["--listen-address", f"{support.LOOPBACK}:{support.free_port()}", *args]
    if "--web.config.file" not in args:
        full += ["--web.config.file", str(web)]
    result = subprocess.run(support.exporter_cmd(*full), capture_output=True, text=True, timeout=30,
                            env={**os.environ, **SECRET_ENV}, cwd=support.ROOT, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
