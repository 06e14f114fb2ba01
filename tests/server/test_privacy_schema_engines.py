"""The privacy inventory holds on both engines: PostgreSQL's migrated schema has the same tables and columns as
SQLite's, so a column added to one engine only (a PostgreSQL-only migration, say) cannot escape the notice."""

from __future__ import annotations

from exporter import catalog
from exporter.server.privacy_fields import catalog_labels, uncovered
from exporter.store.schema import connect_postgres
from tests.server.test_privacy_notice import sqlite_store_columns

COLUMNS = ("SELECT table_name, column_name FROM information_schema.columns"
           " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")


def _postgres_columns(conn) -> set[str]:
    """``table.column`` of every column of the database's schema, read from information_schema."""
    return {f"{table}.{column}" for table, column in conn.execute(COLUMNS).fetchall()}


def test_postgres_has_the_same_tables_and_columns_as_sqlite_and_all_are_in_the_inventory(tmp_path, database_url):
    conn = connect_postgres(database_url)  # a fresh database, migrated as the exporter migrates it at start
    try:
        on_postgres = _postgres_columns(conn)
    finally:
        conn.close()
    on_sqlite = sqlite_store_columns(tmp_path)
    assert {"feedback.user_hash", "error_records.trace", "sketches.data"} <= on_postgres  # the real schema was read
    assert {"only on PostgreSQL": sorted(on_postgres - on_sqlite), "only on SQLite": sorted(on_sqlite - on_postgres)} \
        == {"only on PostgreSQL": [], "only on SQLite": []}
    assert uncovered(on_postgres, catalog_labels(catalog.CATALOG)) == {
        "missing_columns": [], "stale_columns": [], "missing_labels": [], "stale_labels": []}


def test_a_column_added_on_postgres_only_is_caught(tmp_path, database_url):
    """Not vacuous: one more column in the PostgreSQL database shows as a difference and a missing entry."""
    conn = connect_postgres(database_url)
    try:
        conn.execute("ALTER TABLE feedback ADD COLUMN email TEXT")
        on_postgres = _postgres_columns(conn)
    finally:
        conn.close()
    assert on_postgres - sqlite_store_columns(tmp_path) == {"feedback.email"}
    assert uncovered(on_postgres, catalog_labels(catalog.CATALOG))["missing_columns"] == ["feedback.email"]
