"""docker-compose.yml, Dockerfile and .dockerignore, checked without a docker engine.

What is verified here, and how (there is no docker engine on the test
machines, so nothing here builds or runs a container):

- the compose file validates against the compose-spec JSON schema vendored
  in check-jsonschema (``--builtin-schema vendor.compose-spec``), run with
  proxies pointing nowhere to show it needs no network; a broken copy fails;
- every bind-mounted file exists in git, is mounted read-only, and the paths
  the configs refer to inside the containers (rule_files, --config.file,
  Grafana's provider path, any *_file in alertmanager.yml) land on a mount;
- images are pinned to exact versions (Prometheus 3.x), healthchecks and
  ``depends_on: service_healthy`` are wired, Grafana has no default password;
- profile scale-out: pinned PostgreSQL 15, pg_isready healthcheck run for real, no default
  password; every replica has the URL, waits for the healthy db, is scraped (DNS discovery);
- the build context that .dockerignore leaves holds what the Dockerfile
  copies, and from a copy of exactly that context the exporter runs with the
  image's and compose's environment: demo mode, ready, and the image's
  HEALTHCHECK command (``python -m exporter.server.healthcheck``) passes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import DEFAULT_PORT
from tests import support
from tests.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}
OFFICIAL_IMAGES = {"prometheus": "prom/prometheus", "alertmanager": "prom/alertmanager", "grafana": "grafana/grafana"}
SCALE_OUT = {"postgres", "exporter-replica"}  # profile scale-out (docs/scale-out.md)


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is a test dependency (pip install check-jsonschema)"
    return subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **NO_NETWORK})


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} (enough for this file)."""
    def sub(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        present, val = name in env, env.get(name, "")
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if present else arg
        if op == ":?":
            if not val:
                raise ValueError(f"{name}: {arg}")
            return val
        return val

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?)([^}]*))?\}", sub, value)


def _bind_mounts(service: dict) -> list[tuple[str, str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("."):
            mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


def _host_path(service: dict, container_path: str) -> Path | None:
    """The repo path a container path of ``service`` is mounted from, if any."""
    for source, target, _ in _bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (ROOT / source / os.path.relpath(container_path, target)).resolve()
    return None


def _flag(service: dict, name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"--{name}=")]
    return value


# --- schema ------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec_offline():
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.parametrize("breakage", ["bad condition", "unknown key", "ports not a list"])
def test_schema_check_catches_a_broken_compose_file(tmp_path, breakage):
    data = _compose()
    if breakage == "bad condition":
        data["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_up"
    elif breakage == "unknown key":
        data["services"]["exporter"]["healthckeck"] = data["services"]["exporter"].pop("healthcheck")
    else:
        data["services"]["prometheus"]["ports"] = "9090:9090"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(data))
    result = _check_jsonschema(path)
    assert result.returncode == 1, result.stdout
    assert "Schema validation errors" in result.stdout + result.stderr


# --- mounts --------------------------------------------------------------------------------


def test_every_mounted_file_exists_in_git_and_is_read_only():
    compose, tracked = _compose(), _tracked()
    declared_volumes = set(compose["volumes"])
    seen = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in declared_volumes, f"{name}: named volume {source} not declared"
                continue
            seen += 1
            path = (ROOT / source).resolve()
            rel = str(path.relative_to(ROOT))
            assert path.exists(), f"{name}: {source} does not exist"
            if path.is_dir():
                assert any(t.startswith(rel + "/") for t in tracked), f"{name}: {source} holds no tracked file"
            else:
                assert rel in tracked, f"{name}: {source} is not in git"
            assert volume.endswith(":ro"), f"{name}: {volume} must be mounted read-only"
    assert seen == 5  # prometheus.yml, rules, alertmanager.yml, 2 Grafana provisioning dirs


def test_prometheus_finds_its_config_and_rules_through_the_mounts():
    service = _compose()["services"]["prometheus"]
    config_path = _host_path(service, _flag(service, "config.file"))
    assert config_path == ROOT / "provisioning/prometheus/prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    container_dir = Path(_flag(service, "config.file")).parent
    found = []
    for pattern in config["rule_files"]:
        host_glob = _host_path(service, str(container_dir / pattern))
        assert host_glob is not None, pattern
        found += sorted(host_glob.parent.glob(host_glob.name))
    assert found == sorted((ROOT / "alerts/rules").glob("*.yml")) and found
    # The scrape and alerting targets are the compose services on their ports.
    services = _compose()["services"]
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["clary-exporter"] == [f"exporter:{DEFAULT_PORT}"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"exporter", "alertmanager", "prometheus", "grafana"}
    assert set(services) - default == SCALE_OUT


def test_alertmanager_config_and_every_file_it_names_are_mounted():
    service = _compose()["services"]["alertmanager"]
    config_path = _host_path(service, _flag(service, "config.file"))
    assert config_path == ROOT / "alerts/alertmanager.yml"
    config = yaml.safe_load(config_path.read_text())
    container_dir = Path(_flag(service, "config.file")).parent

    def file_refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") or key == "templates":
                    yield from ([value] if isinstance(value, str) else value)
                else:
                    yield from file_refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from file_refs(item)

    for ref in file_refs(config):  # url_file, password_file, templates... wherever they appear
        container = ref if ref.startswith("/") else str(container_dir / ref)
        host = _host_path(service, container)
        assert host is not None and (host.exists() or any(host.parent.glob(host.name))), ref


def test_grafana_provisioning_is_mounted_where_its_provider_reads():
    service = _compose()["services"]["grafana"]
    datasources = _host_path(service, "/etc/grafana/provisioning/datasources")
    assert datasources == ROOT / "provisioning/datasources"
    provider = yaml.safe_load((ROOT / "provisioning/dashboards/clary.yaml").read_text())["providers"][0]
    dashboards = _host_path(service, provider["options"]["path"])
    assert dashboards == ROOT / "provisioning/dashboards"
    assert len(list(dashboards.rglob("*.json"))) >= 13
    datasource = yaml.safe_load((datasources / "prometheus.yaml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"


# --- images, health, secrets ---------------------------------------------------------------


def test_images_are_pinned_to_exact_versions():
    services = _compose()["services"]
    for name, repository in OFFICIAL_IMAGES.items():
        image = services[name]["image"]
        match = re.fullmatch(rf"{re.escape(repository)}:v?(\d+)\.(\d+)\.(\d+)", image)
        assert match, f"{name}: {image} is not pinned to an exact version"
    assert services["prometheus"]["image"].startswith("prom/prometheus:v3.")
    assert int(re.search(r"grafana:(\d+)\.(\d+)", services["grafana"]["image"]).group(1)) >= 11  # schemaVersion 39
    exporter = services["exporter"]
    assert exporter["build"]["dockerfile"] == "Dockerfile"
    from exporter import __version__
    assert exporter["image"] == f"clary-exporter:{__version__}"
    for service in services.values():
        assert not service.get("image", "x:y").endswith(":latest")
    # The Dockerfile's base: an explicit Python minor and Debian release, never latest.
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-(bookworm|trixie)", base), base


def test_healthchecks_and_start_order():
    services = _compose()["services"]
    probes = {"exporter": "exporter.server.healthcheck", "prometheus": "/-/ready", "alertmanager": "/-/ready",
              "grafana": "/api/health"}
    for name, probe in probes.items():
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and probe in " ".join(test), (name, test)
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency]
    assert set(services["prometheus"]["depends_on"]) == {"exporter", "alertmanager"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}


def test_grafana_admin_password_comes_from_the_env_file_without_default():
    env = _compose()["services"]["grafana"]["environment"]
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password
    with pytest.raises(ValueError, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(password, {})
    with pytest.raises(ValueError):
        interpolate(password, {"GRAFANA_ADMIN_PASSWORD": ""})
    assert interpolate(password, {"GRAFANA_ADMIN_PASSWORD": "x7"}) == "x7"
    assert _env_example()["GRAFANA_ADMIN_PASSWORD"] == ""  # the user must choose one
    assert "admin" not in COMPOSE.read_text().split("GF_SECURITY_ADMIN_PASSWORD")[1].split("\n")[0]
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env.example" in _tracked()


def test_exporter_runs_the_demo_unless_told_otherwise():
    env = _compose()["services"]["exporter"]["environment"]
    assert interpolate(env["CLARY_DEMO"], {}) == "true"
    assert interpolate(env["CLARY_DEMO"], {"CLARY_DEMO": "false"}) == "false"
    assert env["CLARY_HMAC_SECRET"] is None  # passed through only when set
    for service in _compose()["services"].values():
        for port in service.get("ports", []):
            assert interpolate(port, {}).startswith("127.0.0.1:"), port


# --- profile scale-out: replicas on one PostgreSQL ---------------------------------------------

SCALE_ENV = {"CLARY_POSTGRES_PASSWORD": "0123abcd" * 3}


def test_postgres_is_pinned_healthchecked_and_has_no_default_password():
    compose = _compose()
    db = compose["services"]["postgres"]
    assert db["profiles"] == ["scale-out"]
    assert re.fullmatch(r"postgres:15\.\d+-(bookworm|trixie)", db["image"]), db["image"]
    assert db["volumes"] == ["postgres-data:/var/lib/postgresql/data"] and "postgres-data" in compose["volumes"]
    assert "ports" not in db  # reachable from the compose network only
    env = {k: interpolate(v, {}) for k, v in db["environment"].items()}
    assert env == {"POSTGRES_USER": "clary", "POSTGRES_DB": "clary", "POSTGRES_PASSWORD": ""}  # empty: refused
    assert interpolate(db["environment"]["POSTGRES_PASSWORD"], SCALE_ENV) == SCALE_ENV["CLARY_POSTGRES_PASSWORD"]
    test = [interpolate(arg, {}) for arg in db["healthcheck"]["test"]]
    assert test == ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "clary", "-d", "clary"]
    assert _env_example()["CLARY_POSTGRES_PASSWORD"] == "" and _env_example()["CLARY_POSTGRES_USER"] == "clary"


def test_the_healthcheck_command_answers_like_pg_isready_does(postgres_server):
    """The healthcheck's argv, pointed at a real server: 0 while it accepts connections, 2 where none listens."""
    argv = [interpolate(arg, {}) for arg in _compose()["services"]["postgres"]["healthcheck"]["test"][1:]]
    argv[0] = str(postgres_server.bindir / "pg_isready")
    up = subprocess.run([*argv, "-p", str(postgres_server.port)], capture_output=True, text=True, timeout=30)
    assert up.returncode == 0 and "accepting connections" in up.stdout, up.stdout + up.stderr
    down = subprocess.run([*argv, "-p", str(support.free_port()), "-t", "3"], capture_output=True, text=True)
    assert down.returncode == 2 and "no response" in down.stdout, down.stdout + down.stderr


def test_every_replica_shares_the_database_once_it_is_healthy():
    from exporter.config import Config, env_overrides
    services = _compose()["services"]
    (replica,) = [s for s in services.values() if s.get("image", "").startswith("clary-exporter:") and
                  "scale-out" in s.get("profiles", [])]  # one service, deploy.replicas containers
    assert replica["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert replica["deploy"]["replicas"] >= 2 and replica["image"] == services["exporter"]["image"]
    db = {k: interpolate(v, SCALE_ENV) for k, v in services["postgres"]["environment"].items()}
    env = {k: interpolate(v, SCALE_ENV) for k, v in replica["environment"].items() if v is not None}
    url = env["CLARY_DATABASE_URL"]
    assert url == f"postgresql://clary:{db['POSTGRES_PASSWORD']}@postgres:5432/clary" and db["POSTGRES_DB"] == "clary"
    read = Config(**env_overrides(env))  # the variables, as the exporter in the container reads them
    assert (read.database_url, read.database_pool_size, read.demo) == (url, 4, True)
    # Otherwise the standalone exporter: demo by default, the HMAC secret passed through, one host port each.
    assert env["CLARY_LISTEN_ADDRESS"] == f"0.0.0.0:{DEFAULT_PORT}" and env["CLARY_DEMO"] == "true"
    assert replica["environment"]["CLARY_HMAC_SECRET"] is None
    first, last = re.fullmatch(rf"127\.0\.0\.1:(\d+)-(\d+):{DEFAULT_PORT}", interpolate(*replica["ports"], {})).groups()
    assert int(last) - int(first) + 1 >= replica["deploy"]["replicas"]
    config = yaml.safe_load((ROOT / "provisioning/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "clary-exporter"]
    (dns,) = job["dns_sd_configs"]  # Prometheus scrapes them all: compose's DNS has one A record per container
    assert (dns["names"], dns["type"], dns["port"]) == (["exporter-replica"], "A", DEFAULT_PORT)


# --- the image -----------------------------------------------------------------------------


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negate, re.compile(regex.rstrip("/"))))
    return patterns


def build_context() -> list[str]:
    """Files docker would send (moby's rule: the last pattern matching the path or a parent wins)."""
    patterns = _dockerignore_patterns()
    files = []
    on_disk = {str(p.relative_to(ROOT)) for top in ROOT.iterdir() if top.name not in (".git", ".venv")
               for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()}
    for rel in sorted(_tracked() | on_disk):
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = False
        for negate, regex in patterns:
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negate
        if not excluded:
            files.append(rel)
    return files


def test_dockerfile_builds_a_non_root_image_with_healthcheck_and_labels():
    text = DOCKERFILE.read_text()
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    assert re.search(rf"^EXPOSE {DEFAULT_PORT}$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-m\", \"exporter.server.healthcheck\"\]", text, re.M)
    assert re.search(r'^ENTRYPOINT \["clary-exporter"\]$', text, re.M)
    for label in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "pytest" not in text and "[test]" not in text and "gunicorn\"" not in text


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    context = build_context()
    copies = [line.split()[1:-1] for line in DOCKERFILE.read_text().splitlines()
              if line.startswith("COPY ") and "--from" not in line]
    sources = [src for srcs in copies for src in srcs]
    assert sources == ["pyproject.toml", "README.md", "exporter", "dashboards", "alerts"]
    for source in sources:
        assert source in context or any(f.startswith(source + "/") for f in context), source
    tracked_package_files = [f for f in _tracked() if f.split("/")[0] in ("exporter", "dashboards", "alerts")]
    assert set(tracked_package_files) <= set(context)
    assert all(f.split("/")[0] in sources for f in context), sorted(set(context) - set(tracked_package_files))
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in context)


def test_exporter_runs_from_the_build_context_as_the_image_runs_it(tmp_path):
    """Copy exactly the build context, then run the ENTRYPOINT with the image's
    ENV and compose's environment (listen address moved to 127.0.0.1)."""
    ctx = tmp_path / "context"
    for rel in build_context():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    text = DOCKERFILE.read_text()
    env_block = re.search(r"^ENV PATH=.*?(?=\n\n)", text, re.M | re.S).group(0)
    image_env = dict(item.split("=", 1) for item in shlex.split(env_block.replace("\\\n", " "))[1:])
    compose_env = _compose()["services"]["exporter"]["environment"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARY_")}
    env.update({k: v for k, v in image_env.items() if k.startswith(("CLARY_", "PYTHON"))})
    env.update({k: interpolate(v, {}) for k, v in compose_env.items() if v is not None})
    port = support.free_port()
    env.update(CLARY_LISTEN_ADDRESS=f"{support.LOOPBACK}:{port}", CLARY_DATA_DIR=str(tmp_path / "data"),
               CLARY_DEMO_DURATION="60", PYTHONPATH=str(ctx))
    assert env["CLARY_DEMO"] == "true" and "CLARY_HMAC_SECRET" not in env
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli"], cwd=ctx, env=env, stdin=subprocess.DEVNULL,
                            stdout=open(tmp_path / "exporter.log", "wb"), stderr=subprocess.STDOUT)
    try:
        base = f"http://{support.LOOPBACK}:{port}"
        support.wait_until(lambda: proc.poll() is None and support.http_get(f"{base}/readyz", timeout=1)[0] == 200,
                           timeout=30, what="exporter from the build context")
        probe = subprocess.run([sys.executable, "-m", "exporter.server.healthcheck"], cwd=ctx, env=env,
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0 and probe.stdout.strip() == "healthy", probe.stdout + probe.stderr

        def demo_traffic():
            status, body = support.http_get(f"{base}/metrics")
            return status == 200 and re.search(rb'clary_http_requests_total\{[^}]*route="/demo/', body)

        support.wait_until(demo_traffic, timeout=30, what="demo traffic")
        first = (tmp_path / "exporter.log").read_text().splitlines()[0]
        assert first.startswith("{"), first  # CLARY_LOG_FORMAT=json from the image
    finally:
        support.stop(proc)
    # Nothing listens any more: the probe reports unhealthy.
    probe = subprocess.run([sys.executable, "-m", "exporter.server.healthcheck"], cwd=ctx, env=env,
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 1 and "unhealthy" in probe.stderr
