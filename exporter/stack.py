"""The bundle as a local stack, without docker: ``python -m exporter.stack``.

Starts the exporter in demo mode, a real Prometheus and a real Alertmanager
(the binaries on PATH: Debian's ``prometheus`` and ``prometheus-alertmanager``
or upstream's ``alertmanager``) with exactly the bundle's configs:

- Prometheus reads ``provisioning/prometheus/prometheus.yml`` laid out as in
  the container (``<dir>/prometheus.yml`` next to ``<dir>/rules`` ->
  ``alerts/rules``); only the compose service addresses in its targets
  (``exporter:25279``, ``alertmanager:9093``, ``localhost:9090``) become
  loopback addresses. Anything else in the file is used as it is.
- Alertmanager reads ``alerts/alertmanager.yml`` in place.

All state lives in a temporary directory that is removed on exit. The URLs
are printed once everything answers its readiness endpoint. Ctrl-C or SIGTERM
stops the three processes (SIGTERM, then SIGKILL after a grace period) and
exits 0; if one of them dies on its own the others are stopped too and the
exit code is 1. The children also get SIGTERM from the kernel should this
process be killed outright (PR_SET_PDEATHSIG), so none is left behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

from exporter import __version__

LOOPBACK = "127.0.0.1"
PACKAGE_DIR = Path(__file__).resolve().parent
PROMETHEUS_CONFIG = Path("provisioning/prometheus/prometheus.yml")
RULES_DIR = Path("alerts/rules")
ALERTMANAGER_CONFIG = Path("alerts/alertmanager.yml")
# Compose service addresses in prometheus.yml -> the stack component they name.
SERVICE_ADDRESSES = {
    "exporter:25279": "exporter",
    "alertmanager:9093": "alertmanager",
    "localhost:9090": "prometheus",
    "prometheus:9090": "prometheus",
}
DEFAULT_PORTS = {"exporter": 25279, "prometheus": 9090, "alertmanager": 9093}
READY_PATHS = {"exporter": "/readyz", "prometheus": "/-/ready", "alertmanager": "/-/ready"}
START_TIMEOUT = 60.0
STOP_GRACE = 10.0
EXIT_USAGE = 2

_PR_SET_PDEATHSIG = 1


class StackError(Exception):
    """The stack cannot start; reported as one line."""


def bundle_root(start: Path | None = None) -> Path:
    """The directory holding provisioning/ and alerts/ (the repo checkout)."""
    for candidate in filter(None, (start, PACKAGE_DIR.parent, Path.cwd())):
        if (candidate / PROMETHEUS_CONFIG).is_file() and (candidate / ALERTMANAGER_CONFIG).is_file():
            return candidate.resolve()
    raise StackError(
        f"cannot find the bundle ({PROMETHEUS_CONFIG} and {ALERTMANAGER_CONFIG}); run from the "
        "repository root or pass --bundle-dir"
    )


def find_binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"none of {', '.join(names)} on PATH (Debian: apt-get install prometheus prometheus-alertmanager)")


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def localize_prometheus_config(config: dict, addresses: dict[str, str]) -> dict:
    """The bundle's Prometheus config with compose service addresses swapped.

    ``addresses`` maps component (exporter, prometheus, alertmanager) to
    host:port. A static target the stack does not know is an error: the
    stack runs the bundle's config, not a guess at it.
    """

    def swap(targets: list[str]) -> list[str]:
        out = []
        for target in targets:
            component = SERVICE_ADDRESSES.get(target)
            if component is None:
                raise StackError(f"{PROMETHEUS_CONFIG}: unknown static target {target!r}; "
                                 f"the local stack maps only {sorted(SERVICE_ADDRESSES)}")
            out.append(addresses[component])
        return out

    config = yaml.safe_load(yaml.safe_dump(config))  # deep copy
    for am in (config.get("alerting") or {}).get("alertmanagers") or []:
        for static in am.get("static_configs") or []:
            static["targets"] = swap(static.get("targets") or [])
    for job in config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            static["targets"] = swap(static.get("targets") or [])
        job.pop("dns_sd_configs", None)  # compose's scale-out replicas: none in the local stack
    return config


def write_prometheus_layout(root: Path, dest: Path, addresses: dict[str, str] | None = None) -> Path:
    """Lay out ``dest`` as /etc/prometheus is laid out in the container.

    ``dest/prometheus.yml`` (addresses swapped when given) and ``dest/rules``,
    a symlink to the bundle's ``alerts/rules``; the config's relative
    ``rule_files`` resolve against the config's directory, so they resolve
    here as they do in the container. Returns the config path.
    """
    dest.mkdir(parents=True, exist_ok=True)
    text = (root / PROMETHEUS_CONFIG).read_text()
    if addresses is not None:
        config = localize_prometheus_config(yaml.safe_load(text), addresses)
        text = (
            f"# {PROMETHEUS_CONFIG} with compose service addresses replaced by the local stack's.\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
    path = dest / "prometheus.yml"
    path.write_text(text)
    (dest / "rules").symlink_to(root / RULES_DIR, target_is_directory=True)
    return path


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: Ctrl-C/SIGTERM handling still applies
        pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Component:
    name: str
    cmd: list[str]
    port: int
    host: str
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ready_url(self) -> str:
        return self.url + READY_PATHS[self.name]


@dataclass
class Stack:
    root: Path
    workdir: Path
    components: list[Component] = field(default_factory=list)

    def start(self, component: Component, env: dict[str, str] | None = None) -> None:
        log = open(component.log_path, "wb")
        try:
            component.proc = subprocess.Popen(
                component.cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Own process group: a terminal's Ctrl-C reaches only this
                # process, which then stops the children in order.
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.components.append(component)

    def wait_ready(self, component: Component, stopping: list[bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping:
            if component.proc.poll() is not None:
                raise StackError(f"{component.name} exited with {component.proc.returncode} while starting; "
                                 f"log: {self.tail(component)}")
            if _ready(component.ready_url):
                return
            time.sleep(0.2)
        if not stopping:
            raise StackError(f"{component.name} not ready at {component.ready_url} after {timeout:.0f}s; "
                             f"log: {self.tail(component)}")

    def tail(self, component: Component, chars: int = 1500) -> str:
        try:
            return component.log_path.read_text(errors="replace")[-chars:].strip() or "(empty)"
        except OSError:
            return "(no log)"

    def dead(self) -> Component | None:
        return next((c for c in self.components if c.proc.poll() is not None), None)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM all (last started first), then SIGKILL whatever outlives the grace period."""
        for component in reversed(self.components):
            if component.proc.poll() is None:
                component.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for component in reversed(self.components):
            try:
                component.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.proc.kill()
                component.proc.wait(5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter.stack",
        description="Run the bundle locally without docker: the demo exporter, Prometheus and Alertmanager "
        "with the bundle's configs. Ctrl-C or SIGTERM stops everything.",
    )
    p.add_argument("--host", default=LOOPBACK, help=f"address all three listen on (default {LOOPBACK})")
    for name, port in DEFAULT_PORTS.items():
        p.add_argument(f"--{name}-port", type=int, default=port, metavar="PORT",
                       help=f"{name} port (default {port}; 0 picks a free one)")
    p.add_argument("--bundle-dir", type=Path, help="repository checkout with provisioning/ and alerts/ "
                   "(default: found next to the package or in the current directory)")
    p.add_argument("--data-dir", type=Path, help="keep state here instead of a temporary directory "
                   "(not removed on exit)")
    p.add_argument("--demo-duration", type=float, default=0, metavar="SECONDS",
                   help="stop demo traffic after this many seconds (default: until shutdown)")
    p.add_argument("--version", action="version", version=f"clary-stack {__version__}")
    return p


def _components(args: argparse.Namespace, root: Path, workdir: Path) -> tuple[list[Component], Path]:
    ports = {name: getattr(args, f"{name}_port") or free_port(args.host) for name in DEFAULT_PORTS}
    addresses = {name: f"{args.host}:{port}" for name, port in ports.items()}
    prom_dir = workdir / "prometheus"
    if prom_dir.exists():  # a kept --data-dir: refresh the config, keep the TSDB
        for stale in (prom_dir / "prometheus.yml", prom_dir / "rules"):
            if stale.is_symlink() or stale.is_file():
                stale.unlink()
    prom_config = write_prometheus_layout(root, prom_dir, addresses)
    for sub in ("exporter", "alertmanager", "prometheus/data"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    exporter = Component("exporter", [
        sys.executable, "-m", "exporter.cli", "--demo", "--listen-address", addresses["exporter"],
        "--data-dir", str(workdir / "exporter"), "--demo-duration", str(args.demo_duration),
    ], ports["exporter"], args.host, workdir / "exporter.log")
    alertmanager = Component("alertmanager", [
        find_binary("alertmanager", "prometheus-alertmanager"),
        f"--config.file={root / ALERTMANAGER_CONFIG}",
        f"--storage.path={workdir / 'alertmanager'}",
        f"--web.listen-address={addresses['alertmanager']}",
        f"--web.external-url=http://{addresses['alertmanager']}",
        "--cluster.listen-address=",  # no gossip: a single local instance
    ], ports["alertmanager"], args.host, workdir / "alertmanager.log")
    prometheus = Component("prometheus", [
        find_binary("prometheus"),
        f"--config.file={prom_config}",
        f"--storage.tsdb.path={prom_dir / 'data'}",
        f"--web.listen-address={addresses['prometheus']}",
        f"--web.external-url=http://{addresses['prometheus']}",
    ], ports["prometheus"], args.host, workdir / "prometheus.log")
    return [exporter, alertmanager, prometheus], prom_config


def run(args: argparse.Namespace) -> int:
    root = bundle_root(args.bundle_dir)
    keep = args.data_dir is not None
    workdir = args.data_dir.resolve() if keep else Path(tempfile.mkdtemp(prefix="clary-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(root, workdir)
    stopping: list[bool] = []

    def on_signal(signum, frame):
        stopping.append(True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        components, prom_config = _components(args, root, workdir)
        for component in components:
            if stopping:
                break
            stack.start(component, env={"PYTHONUNBUFFERED": "1"})
            stack.wait_ready(component, stopping)
        if not stopping:
            exporter, alertmanager, prometheus = components
            print("Clary AI local stack is up (Ctrl-C stops it):", flush=True)
            print(f"  exporter      {exporter.url}/metrics   (demo API under {exporter.url}/demo/api/v1/)")
            print(f"  prometheus    {prometheus.url}   (targets: {prometheus.url}/targets, "
                  f"rules: {prometheus.url}/rules, alerts: {prometheus.url}/alerts)")
            print(f"  alertmanager  {alertmanager.url}")
            print(f"  config        {prom_config} (rules: {root / RULES_DIR}), {root / ALERTMANAGER_CONFIG}")
            print(f"  state, logs   {workdir}{'' if keep else ' (removed on exit)'}")
            print("  Grafana is not started here: point one at the Prometheus URL, or use docker compose.")
            print("ready " + " ".join(f"{c.name}={c.url}" for c in components)
                  + " pids=" + ",".join(str(c.proc.pid) for c in components), flush=True)
        while not stopping:
            died = stack.dead()
            if died is not None:
                print(f"{died.name} exited with {died.proc.returncode}; stopping the stack. "
                      f"log: {stack.tail(died)}", file=sys.stderr, flush=True)
                code = 1
                break
            time.sleep(0.2)
    except StackError as exc:
        print(f"clary stack: error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C while stopping must not abandon the children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except StackError as exc:
        print(f"clary stack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
