"""``clary-exporter``: command line, start-up and clean shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, NoReturn
from urllib.parse import urlsplit

from aiohttp import web

from exporter import __version__, logs
from exporter.catalog import CATALOG
from exporter.collectors.registry import registered
from exporter.config import DEFAULT_LISTEN_ADDRESS, ENV_PREFIX, Config, ConfigError, load
from exporter.server.webconfig import ENV as WEB_CONFIG_ENV
from exporter.store.health import StorageError

log = logging.getLogger("exporter")

# numpy, which datasketches imports for the active-user sketches, starts an OpenBLAS worker thread
# per core (64 idle threads on a 64-core host); the exporter does no linear algebra. Set before
# the server's modules are imported; a value already in the environment wins.
NATIVE_THREAD_LIMITS = {"OPENBLAS_NUM_THREADS": "1"}

EXIT_USAGE = 2
_EPILOG = f"""\
Every option can also be set with a {ENV_PREFIX}* environment variable
(e.g. {ENV_PREFIX}LISTEN_ADDRESS, {ENV_PREFIX}DEMO=true, {ENV_PREFIX}CONFIG, {ENV_PREFIX}LOG_LEVEL,
{ENV_PREFIX}LOG_FORMAT, {ENV_PREFIX}HMAC_SECRET, {ENV_PREFIX}DATA_DIR). Precedence: flag > environment
> config file > default.

Endpoints: /metrics (Prometheus text or OpenMetrics, gzip), /healthz, /readyz, /,
and the event, feedback and privacy API under /api/v1/ (docs/api.md, /api/v1/openapi.json).

`clary-exporter purge [--config FILE] [--data-dir DIR] [--retention-days N]` deletes
stored feedback and per-user activity older than the retention (as the running
exporter does every hour), prints what it removed, and exits. The API's secrets and
limits: {ENV_PREFIX}INGEST_TOKENS (comma-separated), {ENV_PREFIX}ADMIN_TOKEN, {ENV_PREFIX}WEBHOOKS,
{ENV_PREFIX}RETENTION_DAYS, {ENV_PREFIX}MAX_BODY_BYTES, {ENV_PREFIX}MAX_BATCH_ITEMS, {ENV_PREFIX}OPTED_OUT_USERS.

Demo mode serves a Clary-like API under /demo/api/v1/ and sends bounded traffic to it.
It accepts public demo credentials (docs/demo.md): API keys demo-lite-key, demo-standard-key,
demo-professional-key; ingest token demo-ingest-token-not-a-secret; admin token
demo-admin-token-not-a-secret (unless admin_token is configured).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="clary-exporter",
        description="Prometheus exporter for Clary AI: usage, performance, license and feedback "
        "metrics per tier, plus system and GPU metrics.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen-address", metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN_ADDRESS})")
    p.add_argument("--demo", action="store_true", default=None,
                   help="also serve the demo API under /demo/ and send demo traffic to it")
    p.add_argument("--demo-duration", type=float, metavar="SECONDS",
                   help="stop demo traffic after this many seconds (default: run until shutdown)")
    p.add_argument("--config", metavar="FILE", help="YAML config file (see docs/configuration.md)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], type=str.lower,
                   help="log verbosity (default info)")
    p.add_argument("--log-format", choices=["text", "json"], type=str.lower,
                   help="log line format (default text)")
    p.add_argument("--data-dir", metavar="DIR", help="where stored state lives (default ./data)")
    p.add_argument("--database-url", metavar="URL",
                   help="postgresql://USER:PASSWORD@HOST:PORT/DB: one store shared by every replica instead of "
                   "SQLite under --data-dir (env CLARY_DATABASE_URL, which keeps the password out of ps; "
                   "see docs/scale-out.md)")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                   help="TLS and basic auth, in the Prometheus exporter-toolkit format "
                   f"(env {WEB_CONFIG_ENV}; see docs/deployment.md)")
    p.add_argument("--retention-days", type=int, metavar="DAYS",
                   help="keep stored feedback and per-user activity this long (default 365)")
    p.add_argument("--privacy.consent", dest="privacy_consent", choices=["opt_out", "opt_in"],
                   help="opt_out (default): users are tracked unless they object; opt_in: nothing per user is kept "
                   "until their consent is recorded (env CLARY_PRIVACY_CONSENT; see docs/configuration.md)")
    p.add_argument("--license-stale-after", type=int, metavar="SECONDS",
                   help="drop a license's expiry/usage/limit series after this long without a license_status "
                   "event, so alerts on a departed customer resolve (default 86400; 0 = never)")
    p.add_argument("--header-timeout", type=float, metavar="SECONDS",
                   help="close a connection that takes longer to send a request's headers (default 10)")
    p.add_argument("--body-timeout", type=float, metavar="SECONDS",
                   help="close a connection whose request body is not complete this long after its headers "
                   "(default 60)")
    p.add_argument("--keepalive-timeout", type=float, metavar="SECONDS",
                   help="close a keep-alive connection idle this long (default 75)")
    p.add_argument("--max-connections", type=int, metavar="N",
                   help="open connections at most; a new one displaces the longest-waiting idle one "
                   "(default 1024)")
    for name, entry in registered().items():
        p.add_argument(f"--collector.{name}", dest=f"collector_{name}", action=argparse.BooleanOptionalAction,
                       default=None, help=f"{entry.help} (default {'on' if entry.default_enabled else 'off'})")
    p.add_argument("--list-metrics", action="store_true", help="print the metric catalog and exit")
    p.add_argument("--version", action="version", version=f"clary-exporter {__version__}")
    return p


def catalog_table() -> str:
    rows = [("NAME", "TYPE", "LABELS", "HELP")]
    rows += [(s.name, s.kind.value, ",".join(s.label_names) or "-", s.help) for s in CATALOG]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows
    )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        name: getattr(args, name)
        for name in ("listen_address", "demo", "demo_duration", "config", "log_level", "log_format", "data_dir",
                     "retention_days", "license_stale_after", "privacy_consent", "database_url")
    }
    flags.update({name: getattr(args, name)
                  for name in ("header_timeout", "body_timeout", "keepalive_timeout", "max_connections")})
    collectors = {n: getattr(args, f"collector_{n}") for n in registered()}
    if any(v is not None for v in collectors.values()):
        flags["collectors"] = {k: v for k, v in collectors.items() if v is not None}
    return flags


def _loopback_base(host: str, port: int) -> str:
    if host in ("0.0.0.0", "127.0.0.1", "localhost") or host.startswith("127."):
        return f"http://127.0.0.1:{port}"
    if host in ("::", "::1"):
        return f"http://[::1]:{port}"
    raise ConfigError(f"--demo sends traffic over loopback only; listen address {host} is not reachable there")


async def serve(config: Config, stop: asyncio.Event | None = None, web_config_file: str | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then shut down cleanly."""
    from exporter.server import webconfig

    web_config = webconfig.load(web_config_file) if web_config_file else None
    ssl_context = webconfig.ssl_context(web_config) if web_config else None
    if ssl_context is not None and config.demo:
        raise ConfigError("--demo sends its traffic over plain loopback HTTP; it cannot run with TLS "
                          "(tls_server_config in the web config file)")
    for name, value in NATIVE_THREAD_LIMITS.items():
        os.environ.setdefault(name, value)
    from exporter.api.storage import quietly
    from exporter.server.app import create_app

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = config.host_port
    if config.demo:
        from exporter import demo

        app = demo.create_app(config, web_config=web_config, traffic_base=_loopback_base(host, port))
    else:
        app = create_app(config, web_config=web_config)
    from exporter.server import connections

    runner = web.AppRunner(app, handle_signals=False, access_log=None, **connections.runner_options(config))
    try:
        await runner.setup()  # runs the API's start-up check of the store: a StorageError is exit 2
    except BaseException:
        await runner.cleanup()
        raise
    try:
        guard = app[connections.GUARD]  # timeouts and the connection cap around aiohttp's protocol
        listener = await guard.listen(runner.server, host, port, ssl_context)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.listen_address}: {exc.strerror or exc}") from None
    log.info("listening", extra={"fields": {"address": config.listen_address, "version": __version__,
                                           "demo": config.demo, "tls": ssl_context is not None,
                                           "basic_auth": bool(web_config and web_config.basic_auth_users)}})
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        listener.close()
        logs.flush()
        await quietly(runner.cleanup)  # exit 0 whatever the disk did to the last flush (one line)


def _secrets(config: Config) -> list[str]:
    """What the log filter removes wherever it shows up (exporter.logs)."""
    values = [*config.ingest_tokens, *config.api_keys, config.admin_token or "", config.hmac_secret or ""]
    values += [getattr(hook, "url", hook) for hook in config.webhooks]
    if config.database_url:
        values += [config.database_url, urlsplit(config.database_url).password or ""]
    return values + list(getattr(config, "hmac_previous_secrets", None) or ())


def purge(config: Config) -> dict[str, int]:
    """``clary-exporter purge``: the retention purge, once, without a server.

    The database must exist and pass the storage check: a wrong ``--data-dir``
    is an error (one line, exit 2), not a purge of nothing reported as success.
    """
    from exporter.store.checks import open_checked
    from exporter.store.database import DB_FILENAME, STORAGE_ERRORS, Database
    from exporter.store.health import describe

    db = Database(url=config.database_url) if config.database_url else Database(config.data_dir / DB_FILENAME)
    try:
        open_checked(db, create=False)
        return db.purge(config.retention_days)
    except STORAGE_ERRORS as exc:
        raise StorageError(f"{db.location}: {describe(exc)}") from None
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv.pop(0) if argv[:1] == ["purge"] else None
    args = build_parser().parse_args(argv)
    if command == "purge":
        try:
            config = load(_flags(args))
            removed = purge(config)
        except (ConfigError, ValueError, StorageError) as exc:
            print(f"clary-exporter: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        counts = " ".join(f"{name}={count}" for name, count in removed.items())
        print(f"purged records older than {config.retention_days} days: {counts}")
        return 0
    if args.list_metrics:
        print(catalog_table())
        return 0
    try:
        config = load(_flags(args))
        from exporter import logs

        logs.setup(config.log_level, config.log_format, secrets=_secrets(config))
        asyncio.run(serve(config, web_config_file=args.web_config_file or os.environ.get(WEB_CONFIG_ENV)))
    except (ConfigError, ValueError, StorageError) as exc:
        print(f"clary-exporter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
