"""CSV export: no cell a spreadsheet would run as a formula (issue 19, item 8).

The old check looked at the first character only, so ``" =1+1"``, a leading
newline and fullwidth ``＝`` went through.
"""

from __future__ import annotations

import csv
import io
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.api.feedback import csv_safe
from exporter.server.app import create_app
from tests.api_helpers import ADMIN, make_config

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
BLANKS = "".join(chr(c) for c in range(0x110000) if chr(c).isspace()) + "\u200b\u200c\u200d\u2060\ufeff"


def starts_a_formula(cell: str) -> bool:
    """The property: the first character after NFKC and leading whitespace, or a leading tab/CR."""
    return cell[:1] in ("\t", "\r") or unicodedata.normalize("NFKC", cell).lstrip(BLANKS)[:1] in TRIGGERS


@pytest.mark.parametrize("text, safe", [
    ("=1+1", "'=1+1"),
    (" =1+1", "' =1+1"),
    ("\n=HYPERLINK(\"http://evil\")", "'\n=HYPERLINK(\"http://evil\")"),
    ("\r\n@SUM(A1)", "'\r\n@SUM(A1)"),
    ("＝1+1", "'＝1+1"),          # fullwidth equals sign
    ("\u3000＋cmd", "'\u3000＋cmd"),  # ideographic space, fullwidth plus
    ("﹣2+3", "'﹣2+3"),          # small hyphen-minus
    ("\u200b=1", "'\u200b=1"),     # a zero-width space first
    ("\t-x", "'\t-x"),
    ("-", "'-"),
    ("fine = good", "fine = good"),
    ("", ""),
    ("   ", "   "),
    ("'=quoted already", "'=quoted already"),
])
def test_formula_cells_are_prefixed(text, safe):
    assert csv_safe(text) == safe


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.one_of(st.sampled_from(list(" \t\r\n\u3000\u00a0\u2028=+-@＝＋－＠﹦﹢﹣﹫")), st.characters()),
                    max_size=12))
@example(" =1+1")
@example("\n=1")
@example("＝1")
def test_no_cell_starts_a_formula_and_the_text_is_kept(text):
    safe = csv_safe(text)
    assert not starts_a_formula(safe)
    assert safe in (text, "'" + text)  # recoverable: at most a leading quote
    assert (safe != text) == starts_a_formula(text)  # and only where needed


async def test_the_export_neutralises_every_such_cell(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_config(tmp_path), CollectorRegistry()))
    texts = [" =1+1", "\n=cmd|' /C calc'!A0", "＝HYPERLINK(\"http://evil\")", "\t@SUM(1)", "plain"]
    for text in texts:
        resp = await client.post("/api/v1/feedback", json={"type": "general", "rating": 3, "text": text,
                                                            "metadata": {"k": "=x"}},
                                 headers={"X-API-Key": "key-std-carol"})
        assert resp.status == 201
    resp = await client.get("/api/v1/feedback", params={"format": "csv"}, headers=ADMIN)
    rows = list(csv.reader(io.StringIO(await resp.text(), newline="")))
    cells = [cell for row in rows[1:] for cell in row]
    assert cells and not any(starts_a_formula(cell) for cell in cells)
    assert sorted(row[6] for row in rows[1:]) == sorted(csv_safe(t) for t in texts)
    assert {row[6][1:] for row in rows[1:] if row[6] != "plain"} == set(texts) - {"plain"}
