"""The web config file is checked at start like exporter-toolkit checks it (issue 19, item 10).

One test per rule, through ``webconfig.load`` (the message names the field),
then the same bad files through the real CLI: exit 2 and one stderr line.
Before these checks, each of these files was accepted at start and failed
later (every response, or the TLS handshake) or reported the wrong file.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.server import webconfig
from tests import support
from tests.server import test_webconfig as https_tests

pki = https_tests.pki  # the test certificates (a module-scoped fixture)
SECRET_ENV = https_tests.SECRET_ENV
_hash = https_tests._hash

HEADERS = "http_server_config.headers"


def _write(tmp_path: Path, data: dict, pki: dict[str, Path] | None = None) -> Path:
    """``data`` as web.yml, next to copies of the test certificates (when given) named as in pki."""
    for name, source in (pki or {}).items():
        (tmp_path / name).write_bytes(source.read_bytes())
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _tls(**extra) -> dict:
    return {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **extra}}


def _refused(tmp_path: Path, data: dict, pki: dict | None = None) -> str:
    path = _write(tmp_path, data, pki)
    with pytest.raises(webconfig.WebConfigError) as info:
        webconfig.load(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and message.startswith(f"web config file {path}: ")
    return message


# --- response headers -------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, expected", [
    ("X-Custom", "a", ("header 'X-Custom' cannot be configured; allowed (as in exporter-toolkit): "
                       "Strict-Transport-Security, X-Content-Type-Options")),
    ("Set-Cookie", "session=1", "header 'Set-Cookie' cannot be configured"),
    ("x-frame-options", "deny", "header 'x-frame-options' cannot be configured"),  # spelled as exporter-toolkit
    ("X-Frame-Options\r\nSet-Cookie", "a", r"header 'X-Frame-Options\r\nSet-Cookie' cannot be configured"),
])
def test_only_exporter_toolkits_headers_may_be_set(tmp_path, name, value, expected):
    message = _refused(tmp_path, {"http_server_config": {"headers": {name: value}}})
    assert f"{HEADERS}: Value error, {expected}" in message


@pytest.mark.parametrize("value, shown", [
    ("max-age=1\r\nSet-Cookie: a=b", r"'max-age=1\r\nSet-Cookie: a=b'"),
    ("max-age=1\nX: y", r"'max-age=1\nX: y'"),
    ("max-age=1\x00", r"'max-age=1\x00'"),
    ("max-age=1\x7f", r"'max-age=1\x7f'"),
    ("max-age=1 \u00e9", r"'max-age=1 é'"),
])
def test_header_values_with_control_characters_are_refused(tmp_path, value, shown):
    message = _refused(tmp_path, {"http_server_config": {"headers": {"Strict-Transport-Security": value}}})
    assert (f"{HEADERS}: Value error, header Strict-Transport-Security: value {shown} has a control or "
            "non-ASCII character") in message


def test_enumerated_header_values_are_checked(tmp_path):
    message = _refused(tmp_path, {"http_server_config": {"headers": {"X-Frame-Options": "allow-from x"}}})
    assert "header X-Frame-Options: value 'allow-from x' is not one of deny, sameorigin" in message
    message = _refused(tmp_path, {"http_server_config": {"headers": {"X-Content-Type-Options": "sniff"}}})
    assert "is not one of nosniff" in message


def test_every_allowed_header_loads(tmp_path):
    headers = {"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
               "X-Content-Type-Options": "nosniff", "X-Frame-Options": "sameorigin",
               "X-XSS-Protection": "1; mode=block", "Content-Security-Policy": "default-src 'none'\t"}
    config = webconfig.load(_write(tmp_path, {"http_server_config": {"headers": headers}}))
    assert config.http_server_config.headers == headers
    assert set(webconfig.EXTRA_HEADERS) == set(headers)


# --- basic auth users -------------------------------------------------------------------------


def test_bcrypt_cost_below_10_is_refused(tmp_path):
    message = _refused(tmp_path, {"basic_auth_users": {"prometheus": _hash("a-good-password", cost=4)}})
    assert ("basic_auth_users: Value error, basic_auth_users.prometheus: bcrypt cost 4 is outside 10..31 "
            "(make the hash with htpasswd -nBC 10)") in message
    message = _refused(tmp_path, {"basic_auth_users": {"prometheus": _hash("a-good-password", cost=9)}})
    assert "bcrypt cost 9 is outside 10..31" in message


def test_hash_of_the_empty_password_is_refused(tmp_path):
    users = {"prometheus": _hash("a-good-password"), "open": _hash("")}
    message = _refused(tmp_path, {"basic_auth_users": users})
    assert message.endswith(": basic_auth_users.open: the hash is of the empty password")


def test_healthcheck_reads_the_tls_setting_without_a_bcrypt_check_per_user(tmp_path, monkeypatch):
    """The container healthcheck runs every few seconds; ~50 ms of bcrypt per user each time is waste."""
    path = _write(tmp_path, {"basic_auth_users": {"open": _hash("")}})
    checked = []
    monkeypatch.setattr(webconfig, "_check_passwords", checked.append)
    assert webconfig.load(path, check_passwords=False).basic_auth_users.keys() == {"open"}
    assert checked == []
    from exporter.server import healthcheck

    assert healthcheck.probe_url({"CLARY_WEB_CONFIG_FILE": str(path)})[0] == "http://127.0.0.1:25279/readyz"
    assert checked == []
    webconfig.load(path)  # the exporter's own start-up still checks them
    assert [list(users) for users in checked] == [["open"]]


def test_hash_that_is_not_bcrypt_is_refused(tmp_path):
    good = _hash("a-good-password")
    for bad in (good[:-1] + "!", good[:-1], "$2x$10$" + good[7:], "a-plain-password"):
        message = _refused(tmp_path, {"basic_auth_users": {"prometheus": bad}})
        assert "basic_auth_users.prometheus: expected a bcrypt hash" in message, bad


def test_user_names_with_control_characters_are_refused(tmp_path):
    message = _refused(tmp_path, {"basic_auth_users": {"pro\nmetheus": _hash("a-good-password")}})
    assert r"user name 'pro\nmetheus' must be non-empty, ASCII, without ':' or control characters" in message


def test_a_good_hash_loads_and_is_checked_once(tmp_path, monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: calls.append(password) or real(password, hashed))
    config = webconfig.load(_write(tmp_path, {"basic_auth_users": {"prometheus": _hash("a-good-password")}}))
    assert list(config.basic_auth_users) == ["prometheus"] and calls == [b""]


# --- client certificates ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RequestClientCert", "VerifyClientCertIfGiven", "RequireAnyClientCert",
                                  "RequireAndVerifyClientCert"])
def test_client_certificate_modes_need_a_ca(tmp_path, pki, mode):
    message = _refused(tmp_path, _tls(client_auth_type=mode), {"server.crt": pki["server.crt"],
                                                                "server.key": pki["server.key"]})
    assert f"tls_server_config: Value error, client_auth_type {mode} needs client_ca_file" in message


def test_a_ca_without_a_client_certificate_mode_is_refused(tmp_path, pki):
    message = _refused(tmp_path, _tls(client_ca_file="ca.crt"), {"server.crt": pki["server.crt"],
                                                                  "server.key": pki["server.key"]})
    assert "client_ca_file is set but client_auth_type is NoClientCert" in message


@pytest.mark.parametrize("mode, verify_mode", [
    ("RequestClientCert", ssl.CERT_OPTIONAL), ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
    ("RequireAnyClientCert", ssl.CERT_REQUIRED), ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
])
def test_client_certificate_modes_verify_against_the_ca(tmp_path, pki, mode, verify_mode):
    path = _write(tmp_path, _tls(client_auth_type=mode, client_ca_file="ca.crt"),
                  {name: pki[name] for name in ("server.crt", "server.key", "ca.crt")})
    context = webconfig.ssl_context(webconfig.load(path))
    assert context.verify_mode == verify_mode
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "clary test CA"),),)]


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["server.crt", "server.key", "ca.crt"])
def test_each_missing_file_is_named_by_its_field(tmp_path, pki, missing):
    present = {name: pki[name] for name in ("server.crt", "server.key", "ca.crt") if name != missing}
    data = _tls(client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    message = _refused(tmp_path, data, present)
    field = {"server.crt": "cert_file", "server.key": "key_file", "ca.crt": "client_ca_file"}[missing]
    assert message.endswith(f": tls_server_config.{field}: {tmp_path / missing}: no such file")


def test_a_directory_in_place_of_a_file_is_named(tmp_path, pki):
    (tmp_path / "keys").mkdir()
    message = _refused(tmp_path, _tls(key_file="keys"), {"server.crt": pki["server.crt"]})
    assert message.endswith(f": tls_server_config.key_file: {tmp_path / 'keys'}: is a directory, not a file")


def test_a_key_that_does_not_match_names_both_files(tmp_path, pki):
    path = _write(tmp_path, _tls(), {"server.crt": pki["server.crt"], "server.key": pki["client.key"]})
    with pytest.raises(webconfig.WebConfigError) as info:
        webconfig.ssl_context(webconfig.load(path))
    assert str(info.value).startswith(f"tls_server_config: cannot load cert_file {tmp_path / 'server.crt'} "
                                      f"with key_file {tmp_path / 'server.key'}: ")


# --- the CLI: exit 2, one line naming the field ----------------------------------------------------


@pytest.mark.parametrize("case, data, expected", [
    ("header-crlf", {"http_server_config": {"headers": {"Strict-Transport-Security": "max-age=1\r\nX: y"}}},
     "http_server_config.headers: Value error, header Strict-Transport-Security: value"),
    ("header-name", {"http_server_config": {"headers": {"X-Powered-By": "clary"}}},
     "header 'X-Powered-By' cannot be configured"),
    ("cost-4", {"basic_auth_users": {"prometheus": "cost4"}}, "basic_auth_users.prometheus: bcrypt cost 4"),
    ("empty-password", {"basic_auth_users": {"prometheus": "empty"}},
     "basic_auth_users.prometheus: the hash is of the empty password"),
    ("request-cert-no-ca", _tls(client_auth_type="RequestClientCert"),
     "client_auth_type RequestClientCert needs client_ca_file"),
    ("missing-key", _tls(key_file="absent.key"), "tls_server_config.key_file: "),
])
def test_cli_refuses_each_bad_file_with_one_line(tmp_path, pki, case, data, expected):
    users = data.get("basic_auth_users")
    if users:  # placeholders, hashed here
        users["prometheus"] = _hash("a-good-password", cost=4) if users["prometheus"] == "cost4" else _hash("")
    path = _write(tmp_path, data, {"server.crt": pki["server.crt"], "server.key": pki["server.key"]})
    cmd = support.exporter_cmd("--listen-address", f"{support.LOOPBACK}:{support.free_port()}",
                               "--web.config.file", str(path), "--no-collector.gpu", "--no-collector.system")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**os.environ, **SECRET_ENV},
                            cwd=support.ROOT, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"clary-exporter: error: web config file {path}: "), lines
    assert expected in lines[0]
    if case == "missing-key":
        assert lines[0].endswith(f"{tmp_path / 'absent.key'}: no such file")
