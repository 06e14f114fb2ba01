"""Time to regenerate all 13 dashboards (issue target: under 2 seconds).

Runs ``clary-dashboards build`` into a temporary directory as a fresh
process (imports included, as a developer or CI would run it), a few times,
and reports the median and the worst.

Usage: python -m benchmarks.dashboards_build [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "dashboards_build.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    times = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dashboards.cli", "build", "--out", out], check=True,
                           capture_output=True, timeout=60)
            times.append(time.perf_counter() - start)
            files = len(list(Path(out).rglob("*.json")))
    table = (
        "| dashboards | rounds | median (s) | worst (s) | target (s) |\n|---:|---:|---:|---:|---:|\n"
        f"| {files} | {args.rounds} | {statistics.median(times):.2f} | {max(times):.2f} | 2.00 |\n"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table)
    print(table)
    return 0 if max(times) < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
