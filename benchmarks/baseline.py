"""Before and after in one run: a benchmark's servers also started from another checkout.

``--baseline-tree DIR`` (e.g. ``git worktree add /tmp/clary-base <ref>``)
adds, for each of our variants, a ``<variant>@baseline`` server started from
that checkout with its own code and the same benchmark harness, measured in
the same rounds. A change is then judged by the ratio of the two in one run,
not by figures from runs on different days of a shared machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SUFFIX = "@baseline"
ROOT = Path(__file__).resolve().parent.parent


def add_argument(parser) -> None:
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="another checkout of the project (e.g. `git worktree add /tmp/clary-base <ref>`): "
                             "our variants also run from it, as <variant>@baseline, in the same rounds")


def variant_of(name: str) -> tuple[str, bool]:
    """``("aiohttp-ours", True)`` for ``"aiohttp-ours@baseline"``."""
    return (name[: -len(SUFFIX)], True) if name.endswith(SUFFIX) else (name, False)


def server(module: str, name: str, port: int, baseline_tree: Path | None) -> dict:
    """``subprocess.Popen`` arguments that serve ``name`` from this tree or, for ``@baseline``, the other."""
    variant, from_baseline = variant_of(name)
    if from_baseline and baseline_tree is None:
        raise ValueError(f"{name} needs --baseline-tree")
    tree = (baseline_tree if from_baseline else ROOT).resolve()
    env = {**os.environ, "PYTHONPATH": str(tree)}  # its own exporter package, not this tree's editable install
    return {"args": [sys.executable, "-m", module, "--serve", variant, "--port", str(port)], "cwd": tree, "env": env}
