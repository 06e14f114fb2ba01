"""exporter.store.sql: the fragments every store module builds its filters from."""

import sqlite3

from exporter.store.sql import in_list, where


def test_in_list_has_one_placeholder_per_value_and_is_false_for_none():
    conn = sqlite3.connect(":memory:")
    conn.executescript("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b'), ('c');")
    assert in_list("v", ["a", "c"]) == "v IN (?,?)"
    assert conn.execute(f"SELECT v FROM t WHERE {in_list('v', ['a', 'c'])} ORDER BY v", ["a", "c"]).fetchall() == [
        ("a",), ("c",)]
    assert in_list("v", []) == "FALSE"  # 'IN ()' is not SQL (PostgreSQL refuses it)
    assert conn.execute(f"SELECT count(*) FROM t WHERE NOT ({in_list('v', [])})").fetchone() == (3,)


def test_where_leaves_out_unset_filters():
    assert where([("a = ?", 1), ("b = ?", None), ("c > ?", 2)]) == (" WHERE a = ? AND c > ?", [1, 2])
    assert where([("a = ?", None)]) == ("", [])
