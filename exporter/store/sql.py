"""SQL fragments the store's modules share: filtered listings, per-user deletes and exports."""

from __future__ import annotations

from collections.abc import Iterable, Sized


def where(conditions: Iterable[tuple[str, object]]) -> tuple[str, list]:
    """``" WHERE a AND b"`` and its arguments from ``(clause with one ?, value)`` pairs.

    A pair whose value is None is an unset filter and left out; none left gives ``""``.
    """
    kept = [(clause, value) for clause, value in conditions if value is not None]
    if not kept:
        return "", []
    return " WHERE " + " AND ".join(clause for clause, _ in kept), [value for _, value in kept]



def in_list(column: str, values: Sized) -> str:
    """``"column IN (?, ...)"``, one placeholder per value; ``"FALSE"`` for none (``IN ()`` is not SQL)."""
    return f"{column} IN ({','.join('?' * len(values))})" if len(values) else "FALSE"
