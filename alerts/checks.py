"""Static checks of the generated rules against the metric catalog.

Used by ``tests/alerts/test_rules.py``; importable by other checks (the
dashboards have the same need). The PromQL reader here is deliberately small:
it finds metric selectors, their label matchers, grouping labels and range
durations, which is all a catalog check needs. It is not a PromQL parser.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.catalog import BY_NAME, exposed_name_index
from mixin.config import Config

ALERTS_DIR = Path(__file__).resolve().parent
RULES_DIR = ALERTS_DIR / "rules"
TESTS_DIR = ALERTS_DIR / "tests"

# The cluster label (an external label, or a target label in multi-cluster
# setups): every rule aggregation keeps it, so it counts as a target label.
CLUSTER_LABEL = Config().cluster_label
# Series Prometheus makes itself, with the labels they carry.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance", CLUSTER_LABEL})}
# Labels every scraped series gets from its target.
TARGET_LABELS = frozenset({"job", "instance", CLUSTER_LABEL})

AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}) | AGGREGATIONS | GROUPING

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>\d+(?:ms|[smhdwy]))(?![A-Za-z0-9_:])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class ExprInfo:
    selectors: tuple[Selector, ...]
    grouping_labels: frozenset[str]
    ranges: tuple[str, ...]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, match.group()))
    return out


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    return bytes(text[1:-1], "utf-8").decode("unicode_escape")


def read_expr(expr: str) -> ExprInfo:
    """Metric selectors, grouping/matching labels and range durations of ``expr``."""
    toks = _tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    ranges: list[str] = []
    i = 0

    def at(j: int) -> str | None:
        return toks[j][1] if j < len(toks) else None

    while i < len(toks):
        kind, text = toks[i]
        if kind == "range":
            ranges.append(text[1:-1])
            i += 1
            continue
        if kind == "ident" and text in GROUPING and at(i + 1) == "(":
            j = i + 2
            while at(j) not in (")", None):
                if toks[j][0] == "ident":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "ident" and (text in KEYWORDS or at(i + 1) == "("):
            i += 1  # operator keyword, aggregation or function name
            continue
        if kind == "ident" or (kind == "op" and text == "{"):
            name = text if kind == "ident" else ""
            j = i + 1 if kind == "ident" else i
            matchers: list[Matcher] = []
            if at(j) == "{":
                j += 1
                while at(j) not in ("}", None):
                    if at(j) == ",":
                        j += 1
                        continue
                    label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2]
                    if value[0] != "string":
                        raise ValueError(f"unexpected matcher value {value[1]!r} in {expr!r}")
                    matchers.append(Matcher(label, op, _unquote(value[1])))
                    j += 3
                j += 1
            for m in matchers:
                if m.label == "__name__" and m.op == "=":
                    name = m.value
            selectors.append(Selector(name, tuple(m for m in matchers if m.label != "__name__")))
            i = j
            continue
        i += 1
    return ExprInfo(tuple(selectors), frozenset(grouping), tuple(ranges))


# --------------------------------------------------------------------------
# Rules


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def promtool_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.test.yml"))


def load_groups() -> list[dict[str, Any]]:
    groups = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            groups.append({**group, "file": path.name})
    return groups


def iter_rules() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(group, rule) for every rule of every generated file."""
    for group in load_groups():
        for rule in group["rules"]:
            yield group, rule


def recording_labels(name: str) -> frozenset[str]:
    """The labels a ``level:metric:operations`` rule keeps: its level's labels (``doc_type`` is one) and the cluster label."""
    from .groups.common import level_labels

    return frozenset(level_labels(name)) | {CLUSTER_LABEL}


def catalog_problems(expr: str, recorded: set[str]) -> list[str]:
    """Why ``expr`` does not fit the catalog (empty when it does)."""
    problems: list[str] = []
    info = read_expr(expr)
    exposed = exposed_name_index()
    known_labels: set[str] = set(TARGET_LABELS)
    for sel in info.selectors:
        if not sel.name:
            problems.append(f"selector without a metric name in {expr!r}")
            continue
        if ":" in sel.name:
            if sel.name not in recorded:
                problems.append(f"{sel.name} is not a recording rule of alerts/rules")
                continue
            allowed = set(recording_labels(sel.name))
        elif sel.name in PROMETHEUS_SERIES:
            allowed = set(PROMETHEUS_SERIES[sel.name])
        elif sel.name in exposed:
            family = BY_NAME[exposed[sel.name]]
            allowed = set(family.label_names) | TARGET_LABELS
            if sel.name.endswith("_bucket"):
                allowed.add("le")
            for m in sel.matchers:
                spec = next((label for label in family.labels if label.name == m.label), None)
                if spec is None or spec.values is None:
                    continue
                valid = set(spec.values) | ({spec.fallback} if spec.fallback else set())
                if m.op in ("=", "!="):
                    values = [m.value]
                elif re.fullmatch(r"[A-Za-z0-9_|-]+", m.value):
                    values = m.value.split("|")  # a plain alternation of literals
                else:
                    values = []
                for value in values:
                    if value not in valid:
                        problems.append(f"{sel.name}: {m.label}={value!r} is not one of {sorted(valid)}")
        else:
            problems.append(f"{sel.name} is not in the metric catalog (exporter/catalog.py)")
            continue
        for m in sel.matchers:
            if m.label not in allowed:
                problems.append(f"{sel.name} has no label {m.label!r} (it has {sorted(allowed)})")
        known_labels |= allowed
    for label in sorted(info.grouping_labels - known_labels):
        problems.append(f"grouping label {label!r} belongs to no metric of {expr!r}")
    return problems


# --------------------------------------------------------------------------
# Binaries


def binary(*names: str) -> str:
    """The path of the first of ``names`` on PATH; an AssertionError naming them otherwise.

    Tests call this and fail (never skip) when the binary is missing:
    ``make system-deps`` installs Debian's prometheus and prometheus-alertmanager.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        f"none of {', '.join(names)} is on PATH; install them (make system-deps: "
        "apt-get install prometheus prometheus-alertmanager)"
    )
