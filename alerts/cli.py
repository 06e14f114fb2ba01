"""Generate Clary's Prometheus rules and Alertmanager config from a small config.

The monitoring-mixin way: the selector, thresholds, SLO targets and routing
live in :class:`mixin.config.Config` (shared with the dashboards), the
burn-rate windows in :data:`mixin.slo.BURN_RATE_WINDOWS`, the rule groups in
``alerts/groups/``, and this command turns them into
``alerts/rules/*.yml`` and ``alerts/alertmanager.yml``. The output is
deterministic and committed; ``tests/alerts/test_generate.py`` fails when the
committed files differ from what the generator produces.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from exporter import __version__

from .config import Config
from .render import PACKAGE_DIR, check, render, write

REGENERATE_HINT = "cd /work/main && .venv/bin/python -m alerts.generate"

EXAMPLES = """\
examples:
  python -m alerts.generate                      rewrite alerts/rules/*.yml and alerts/alertmanager.yml
  python -m alerts.generate --check              exit 1 and show a diff if the committed files are stale
  python -m alerts.generate --config site.yml --output-dir /etc/prometheus/clary
  python -m alerts.generate --slo-target 0.999 --output-dir out/

--config takes a YAML mapping with any subset of the Config fields (unknown
keys are refused): selector, cluster_label, thresholds, per-tier SLO targets,
team_receivers, runbook_base_url, and for a real deployment webhook_urls /
receiver_overrides, kept outside git. `clary-dashboards build --config` takes
the same file, so panels and alerts agree. See docs/alerting.md.

exit status: 0 done (or up to date), 1 --check found stale files, 2 bad config.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alerts.generate",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML site file overriding Config fields (selector, thresholds, SLO targets, receivers)")
    p.add_argument("--slo-target", type=float, metavar="RATIO",
                   help="availability SLO target of every tier, e.g. 0.999 (overrides --config's availability_slo)")
    p.add_argument(
        "--output-dir", type=Path, default=PACKAGE_DIR, metavar="DIR", help="where rules/ and alertmanager.yml go (default: the alerts/ package directory)"
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 and print a diff if the files differ")
    p.add_argument("--version", action="version", version=f"clary-alerts {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = Config.load(args.config)
        if args.slo_target is not None:
            cfg = cfg.with_availability_target(args.slo_target)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rendered = render(cfg)
    if args.check:
        problems = check(args.output_dir, rendered)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"generated alert files are out of date; regenerate with: {REGENERATE_HINT}", file=sys.stderr)
            return 1
        print(f"{len(rendered)} generated files up to date in {args.output_dir}")
        return 0
    for line in write(args.output_dir, rendered) or ["nothing to do: files up to date"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
