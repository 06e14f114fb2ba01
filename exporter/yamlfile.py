"""Reading a YAML file that must hold a mapping, with one-line errors.

Shared by the config file and the web config file so both report a missing
file, bad YAML or a non-mapping the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The file's top-level mapping ({} for an empty file); raises ``error`` naming ``what``."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping at the top level")
    return data
