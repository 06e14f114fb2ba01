"""``clary-dashboards``: build or check the generated dashboard JSON.

    clary-dashboards build [--out DIR]   write provisioning/dashboards/<tier>/*.json
    clary-dashboards check [--out DIR]   exit 1, naming each file, if DIR is out of date
    clary-dashboards list                uid, file and title of every dashboard
    clary-dashboards --version           the bundle's version
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import __version__

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
    sub.add_parser("list", help="list the dashboards", description="list the dashboards")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for b in _build.all_dashboards():
            print(f"{b.uid:32} {b.path:50} {b.dashboard.title}")
        return 0

    out: Path = args.out if args.out is not None else _build.default_out()
    if args.command == "build":
        written, removed = _build.build(out)
        for path in written:
            print(f"wrote {path}")
        for path in removed:
            print(f"removed stale {path}")
        print(f"{len(_build.all_dashboards())} dashboards in {out} ({len(written)} changed)")
        return 0

    problems = _build.check(out)
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
