"""``clary-dashboards``: build or check the generated dashboard JSON.

    clary-dashboards build [--out DIR] [--config FILE]   write provisioning/dashboards/<tier>/*.json
    clary-dashboards check [--out DIR] [--config FILE]   exit 1, naming each file, if DIR is out of date
    clary-dashboards list                                uid, file and title of every dashboard
    clary-dashboards --version                           the bundle's version

``--config`` takes the site file ``python -m alerts.generate --config`` takes
(:class:`mixin.config.Config`): the selector, the cluster label and the
thresholds of the panels come from it, so panels and alerts agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from exporter import __version__
from mixin.config import Config

from . import build as _build


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clary-dashboards",
        description="Generate the Clary Grafana dashboards from dashboards/ (grafanalib).",
    )
    parser.add_argument("--version", action="version", version=f"clary-dashboards {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("build", "write the dashboard JSON files"),
        ("check", "fail if the JSON files differ from what the code generates"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--out",
            type=Path,
            default=None,
            help="provisioning directory holding <tier>/ folders (default: provisioning/dashboards "
            "of the source tree)",
        )
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="FILE",
            help="YAML site file overriding the shared config (selector, cluster_label, thresholds, SLO targets): "
            "the same file as `python -m alerts.generate --config`",
        )
    sub.add_parser("list", help="list the dashboards", description="list the dashboards")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for b in _build.all_dashboards():
            print(f"{b.uid:32} {b.path:50} {b.dashboard.title}")
        return 0

    try:
        cfg = Config.load(args.config)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"clary-dashboards: --config {args.config}: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out if args.out is not None else _build.default_out()
    if args.command == "build":
        written, removed = _build.build(out, cfg)
        for path in written:
            print(f"wrote {path}")
        for path in removed:
            print(f"removed stale {path}")
        print(f"{len(_build.all_dashboards())} dashboards in {out} ({len(written)} changed)")
        return 0

    problems = _build.check(out, cfg=cfg)
    if problems:
        for problem in problems:
            print(f"clary-dashboards check: {problem}", file=sys.stderr)
        print(
            f"clary-dashboards check: {len(problems)} file(s) out of date; run "
            "`clary-dashboards build` and commit provisioning/dashboards/",
            file=sys.stderr,
        )
        return 1
    print(f"{len(_build.all_dashboards())} dashboards up to date in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
