"""The in-memory half of the cross-replica dedupe window: admission per batch, the bounded queue, the tail's gaps."""

from __future__ import annotations

from exporter.ingest.schemas import FeatureUsed
from exporter.ingest.shared_dedupe import GAP_GRACE_SECONDS, Cursor, SharedWindow


def events(*ids):
    return [FeatureUsed(tier="standard", feature="ocr", outcome="success", id=i) for i in ids]


def test_a_batch_another_replica_accepted_is_all_duplicates_and_a_new_one_is_queued_once():
    window = SharedWindow("secret-0123456789abcdef")
    window.learn(window.digest(["a", "b", "c"]) + window.digest(["x"]))
    batch = events("a", None, "b", "c")
    fresh, duplicates = window.admit(batch, batch[1:])  # the local window had seen "a": the digest is the batch's
    assert [e.id for e in fresh] == [None] and duplicates == 2
    assert not window.queue
    fresh, duplicates = window.admit(events("d", "e"), events("e"))
    assert [e.id for e in fresh] == ["e"] and duplicates == 0
    assert list(window.queue) == [window.digest(["d", "e"])]
    partial = events("a", "b")  # an overlap, not the same batch: per replica only
    fresh, duplicates = window.admit(partial, partial)
    assert (len(fresh), duplicates) == (2, 0) and len(window.queue) == 2
    assert window.admit(events(None), events(None)) == (events(None), 0) and len(window.queue) == 2


def test_the_digest_is_over_the_ids_in_order_and_unambiguous():
    window = SharedWindow("secret-0123456789abcdef")
    assert window.digest(["a", "b"]) != window.digest(["b", "a"])
    assert window.digest(["a\nb"]) != window.digest(["a", "b"])
    assert window.digest(["a\nb", "c"]) != window.digest(["a", "b\nc"])
    assert window.digest(["a", "b"]) == window.digest(["a", "b"])


def test_the_digest_is_keyed_by_the_secret_and_never_the_ids():
    one, two, plain = SharedWindow("secret-one-0123456789"), SharedWindow("secret-two-0123456789"), SharedWindow()
    assert one.digest(["id-1"]) != two.digest(["id-1"]) != plain.digest(["id-1"])
    assert one.digest(["id-1"]) == SharedWindow("secret-one-0123456789").digest(["id-1"])
    assert len(one.digest(["id-1"])) == 12 and b"id-1" not in one.digest(["id-1"])


def test_a_full_queue_drops_the_oldest_and_counts_them():
    window = SharedWindow(queue_cap=3)
    for i in "abcd":
        window.admit(events(i), events(i))
    assert list(window.queue) == [window.digest([i]) for i in "bcd"] and window.dropped == 1
    taken = window.take(2)
    for i in "ef":
        window.admit(events(i), events(i))
    window.restore(taken)  # the store failed: back in front, the oldest beyond the cap dropped
    assert list(window.queue) == [window.digest([i]) for i in "def"] and window.dropped == 3


def test_the_cursor_remembers_gaps_until_filled_or_too_old():
    now = [100.0]
    cursor = Cursor(10, clock=lambda: now[0])
    cursor.advance(18, [(12, 13), (16, 17)])
    assert cursor.after == 18 and cursor.ranges() == [(12, 13), (16, 17)]
    cursor.filled([12, 13, 16])
    assert cursor.ranges() == [(16, 17)]
    now[0] += GAP_GRACE_SECONDS + 1
    assert cursor.ranges() == []
    cursor.advance(10, [])
    assert cursor.after == 18


def test_bulk_update_of_the_window_stays_within_its_bound():
    from exporter.ingest.dedupe import DedupeWindow
    window = DedupeWindow(max_ids=10)
    keys = [bytes([i]) for i in range(25)]
    window.update(keys)
    assert len(window) <= 10
    assert all(key in window for key in keys[-5:]) and keys[0] not in window
    assert b"other" not in window
