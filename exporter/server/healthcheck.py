"""``python -m exporter.server.healthcheck``: the container's health probe.

Slim images have no curl or wget, so the image's HEALTHCHECK (and the
compose healthcheck) run this: a GET of ``/readyz`` on the exporter in the
same container, exit 0 when it answers 200, 1 otherwise. The port comes from
``CLARY_LISTEN_ADDRESS``; with a web config file that turns TLS on
(``CLARY_WEB_CONFIG_FILE``) it speaks HTTPS to itself without verifying the
certificate (it connects to 127.0.0.1, which the certificate need not name).
``/readyz`` needs no credentials, so basic auth does not get in the way.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request

from exporter import __version__
from exporter.config import DEFAULT_PORT, parse_listen_address

TIMEOUT_SECONDS = 3.0


def probe_url(environ: dict[str, str] | None = None) -> tuple[str, ssl.SSLContext | None]:
    environ = os.environ if environ is None else environ
    port = DEFAULT_PORT
    if environ.get("CLARY_LISTEN_ADDRESS"):
        port = parse_listen_address(environ["CLARY_LISTEN_ADDRESS"])[1]
    context = None
    web_config = environ.get("CLARY_WEB_CONFIG_FILE")
    if web_config:
        from exporter.server import webconfig

        if webconfig.load(web_config, check_passwords=False).tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    scheme = "https" if context else "http"
    return f"{scheme}://127.0.0.1:{port}/readyz", context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.server.healthcheck",
        description="Exit 0 when the exporter in this container answers GET /readyz with 200, else 1. "
        "Reads CLARY_LISTEN_ADDRESS and CLARY_WEB_CONFIG_FILE.")
    parser.add_argument("--version", action="version", version=f"clary-healthcheck {__version__}")
    parser.parse_args(argv)
    try:
        url, context = probe_url()
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bad web config file: report it, still exit 1
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
