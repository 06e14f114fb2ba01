"""The one SQL helper the store's filtered listings share."""

from __future__ import annotations

from collections.abc import Iterable


def where(conditions: Iterable[tuple[str, object]]) -> tuple[str, list]:
    """``" WHERE a AND b"`` and its arguments from ``(clause with one ?, value)`` pairs.

    A pair whose value is None is an unset filter and left out; none left gives ``""``.
    """
    kept = [(clause, value) for clause, value in conditions if value is not None]
    if not kept:
        return "", []
    return " WHERE " + " AND ".join(clause for clause, _ in kept), [value for _, value in kept]
