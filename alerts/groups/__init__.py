"""The rule groups, one module each, and which rule file each group is written to.

A group builder takes a :class:`alerts.config.Config` and returns the group
as plain data (``{"name": ..., "rules": [...]}``); :mod:`alerts.render`
turns :data:`RULE_FILES` into ``alerts/rules/*.yml``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Config
from .app import app_group
from .exporter_self import exporter_group
from .feedback import feedback_group
from .gpu import gpu_group
from .http import http_group
from .inference import inference_group
from .license import license_group
from .llm import llm_group
from .meta import meta_group
from .slo import slo_group

GroupBuilder = Callable[[Config], dict[str, Any]]

RULE_FILES: dict[str, tuple[GroupBuilder, ...]] = {
    "clary-slo.yml": (slo_group,),
    "clary-http.yml": (http_group,),
    "clary-app.yml": (app_group,),
    "clary-license.yml": (license_group,),
    "clary-inference.yml": (inference_group, llm_group),
    "clary-infrastructure.yml": (gpu_group, exporter_group),
    "clary-feedback.yml": (feedback_group, meta_group),
}

__all__ = [
    "RULE_FILES",
    "app_group",
    "exporter_group",
    "feedback_group",
    "gpu_group",
    "http_group",
    "inference_group",
    "license_group",
    "llm_group",
    "meta_group",
    "slo_group",
]
