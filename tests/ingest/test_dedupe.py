"""``DedupeWindow.admit``: a whole batch of ids checked with set operations, as checking ids one by one would."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.ingest.dedupe import DedupeWindow
from exporter.ingest.schemas import Event

class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def items_with_ids(ids: list) -> list:
    return [msgspec.convert({"type": "feature_used", "tier": "lite", "feature": "ocr", "id": event_id}, Event)
            for event_id in ids]


def positions(items: list, chosen: list) -> list[int]:
    """Where each of ``chosen`` (the same objects) sits in ``items``."""
    where = {id(event): index for index, event in enumerate(items)}
    return [where[id(event)] for event in chosen]


def admit_one_by_one(window: DedupeWindow, items: list) -> tuple[list, int]:
    """The reference: ``id in window`` then ``window.add(id)``, item by item (None ids always fresh)."""
    fresh, duplicates = [], 0
    for event in items:
        event_id = event.id
        if event_id is not None:
            if event_id in window:
                duplicates += 1
                continue
            window.add(event_id)
        fresh.append(event)
    return fresh, duplicates


ID_OR_NONE = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", None])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(max_ids=st.integers(1, 16), ttl=st.sampled_from([2.0, 10.0, 1e9]),
       batches=st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]), st.lists(ID_OR_NONE, max_size=12)),
                        max_size=12))
def test_admit_matches_checking_ids_one_by_one(max_ids, ttl, batches):
    """Fast path or fallback, admit gives the same fresh items, duplicates and window contents as id-by-id checks.

    Ids from a small alphabet (duplicates across and inside batches), None
    ids, rotation by size (max_ids 1..16) and by age (a fake clock, tick
    once per batch as the API does).
    """
    clock = FakeClock()
    window = DedupeWindow(max_ids=max_ids, ttl=ttl, clock=clock)
    reference = DedupeWindow(max_ids=max_ids, ttl=ttl, clock=clock)
    for advance, ids in batches:
        clock.now += advance
        window.tick()
        reference.tick()
        items = items_with_ids(ids)
        fresh, duplicates = window.admit(items)
        want_fresh, want_duplicates = admit_one_by_one(reference, items)
        assert [id(event) for event in fresh] == [id(event) for event in want_fresh]
        assert duplicates == want_duplicates
        # Private peek: the generations (and the current one's start) decide what is forgotten later, so the
        # fast path must leave them exactly as id-by-id checks do; no public view shows them all.
        assert (window._current, window._previous, window._since) == \
            (reference._current, reference._previous, reference._since)
        assert len(window) <= max_ids


def test_admit_counts_duplicates_inside_one_batch_and_never_None():
    """A repeated id inside one batch is a duplicate; items without an id are always fresh."""
    window = DedupeWindow(max_ids=100)
    items = items_with_ids(["a", "a", None, None, "b", "a"])
    fresh, duplicates = window.admit(items)
    assert positions(items, fresh) == [0, 2, 3, 4]
    assert duplicates == 2
    assert len(window) == 2 and "a" in window and "b" in window


def test_admit_fast_path_returns_the_batch_and_remembers_every_id():
    """All-new distinct ids take the set path (the same list back); a retry of them is all duplicates."""
    window = DedupeWindow(max_ids=100)
    items = items_with_ids(["a", "b", "c"])
    fresh, duplicates = window.admit(items)
    assert fresh is items and duplicates == 0
    assert window.admit(items_with_ids(["c", "b", "a", "d"])) == (items_with_ids(["c", "b", "a", "d"])[3:], 3)


def test_admit_rotates_by_size_like_add():
    """max_ids 4 (generations of 2): ids are remembered for the next 2 ids, then forgotten."""
    window = DedupeWindow(max_ids=4)
    assert window.admit(items_with_ids(["a", "b"]))[1] == 0  # current reaches 2: rotated, {a, b} previous
    assert len(window) == 2 and "a" in window and "b" in window  # (that it rotated here shows below: c, d forget a)
    assert window.admit(items_with_ids(["a"]))[1] == 1  # still remembered
    assert window.admit(items_with_ids(["c", "d"]))[1] == 0  # rotated again: {a, b} forgotten
    items = items_with_ids(["a", "c"])
    fresh, duplicates = window.admit(items)
    assert (positions(items, fresh), duplicates) == ([0], 1)
    assert len(window) <= 4


def test_admit_rotates_by_age_on_tick():
    """ttl 10: an id survives one rotation by age (at 5 s) and is forgotten at the second (at 10 s).

    When each rotation happened shows in when "a" is forgotten: a first rotation
    before 5 s would forget it before 10 s, one after 5 s only after 10 s.
    Steps are binary fractions, so that the times are exact.
    """
    clock = FakeClock()
    window = DedupeWindow(max_ids=100, ttl=10.0, clock=clock)
    window.admit(items_with_ids(["a"]))
    clock.now += 4.9375
    window.tick()
    assert "a" in window
    clock.now += 0.0625
    window.tick()  # 5 s: the first rotation
    assert window.admit(items_with_ids(["a"]))[1] == 1
    clock.now += 4.9375
    window.tick()  # 4.9375 s after the first rotation: none yet
    assert "a" in window and window.admit(items_with_ids(["a"]))[1] == 1
    clock.now += 0.0625
    window.tick()  # 10 s: the second rotation forgets "a"
    assert "a" not in window and window.admit(items_with_ids(["a"]))[1] == 0
