"""Entry point kept for ``python -m alerts.generate`` (docs, tests and the generated headers name it).

The generator itself is split by concern: :mod:`alerts.config` (thresholds,
burn-rate windows, receivers), :mod:`alerts.groups` (one module per rule
group), :mod:`alerts.alertmanager_config`, :mod:`alerts.render` and
:mod:`alerts.cli`.
"""

from __future__ import annotations

import sys

from alerts.cli import main

if __name__ == "__main__":
    sys.exit(main())
