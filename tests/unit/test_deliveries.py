"""The delivery log on a real ZODB (FileStorage, so conflict resolution runs as in production).

The "site" is a persistent mapping that provides IAnnotations itself: no Plone needed.
"""

from __future__ import annotations

import threading

import pytest
import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError
from zope.annotation.interfaces import IAnnotations
from zope.interface import implementer

from collective.plonecelery.blogs import deliveries

DAY = 86400.0
NOW = 1_750_000_000.0


@implementer(IAnnotations)
class Site(PersistentMapping):
    """Annotations are the object itself."""


@pytest.fixture
def db(tmp_path):
    database = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
    with database.transaction() as conn:
        conn.root()["site"] = Site()
    yield database
    database.close()


@pytest.fixture
def queued_trims(monkeypatch):
    calls = []
    monkeypatch.setattr(deliveries, "_queue_trim", lambda portal: calls.append(portal))
    return calls


class Client:
    """One ZODB connection with its own transaction manager, like one Zope thread."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()

    @property
    def site(self):
        return self.conn.root()["site"]

    def record(self, delivery_id, **kwargs):
        values = {
            "source_id": "blog",
            "event": "post.published",
            "remote_id": "1",
            "status": "queued",
            "now": NOW,
        }
        values.update(kwargs)
        return deliveries.record(delivery_id=delivery_id, portal=self.site, **values)

    def commit(self):
        self.tm.commit()

    def close(self):
        self.tm.abort()
        self.conn.close()


@pytest.fixture
def client(db, queued_trims):
    client = Client(db)
    yield client
    client.close()


def fill(client, count, *, start=NOW, prefix="d"):
    for number in range(count):
        assert client.record(f"{prefix}{number:05d}", now=start + number)
    client.commit()


# -- record, dedupe, list, update -----------------------------------------------------------------


def test_record_and_dedupe(client):
    assert client.record("msg_1") is True
    assert client.record("msg_1", now=NOW + 60) is False
    client.commit()
    entry = deliveries.get("msg_1", portal=client.site)
    assert entry["status"] == "queued"
    assert entry["source_id"] == "blog"
    assert entry["received"].startswith("2025-06-15T")
    assert deliveries.count(portal=client.site) == 1


def test_delivery_ids_are_per_source(client):
    assert client.record("same", source_id="one")
    assert client.record("same", source_id="two")
    assert client.record("same", source_id="one") is False
    assert deliveries.get("same", source_id="two", portal=client.site)["source_id"] == "two"
    assert deliveries.count(portal=client.site) == 2


def test_a_pending_or_finished_import_makes_a_duplicate(client):
    assert client.record("msg_1")
    for status in ("imported", "skipped", "removed"):
        deliveries.update("msg_1", source_id="blog", status=status, portal=client.site)
        assert client.record("msg_1", now=NOW + 3600) is False


def test_after_a_failed_import_the_delivery_is_accepted_again(client):
    assert client.record("msg_1")
    deliveries.update("msg_1", source_id="blog", status="failed", portal=client.site)
    assert client.record("msg_1", now=NOW + 30) is True
    assert deliveries.get("msg_1", source_id="blog", portal=client.site)["status"] == "queued"
    # The earlier entry stays in the log.
    listed = deliveries.list_deliveries(portal=client.site)
    assert [(e["delivery_id"], e["status"]) for e in listed] == [
        ("msg_1", "queued"),
        ("msg_1", "failed"),
    ]
    assert deliveries.count(portal=client.site) == 2


def test_the_same_id_for_another_post_or_event_is_another_delivery(client):
    assert client.record("msg_1", remote_id="1")
    assert client.record("msg_1", remote_id="2", now=NOW + 1) is True
    assert client.record("msg_1", remote_id="2", event="post.deleted", now=NOW + 2) is True


def test_repeat_window_bounds_a_finished_import(client):
    assert client.record("body-digest", repeat_window=60)
    # Pending: a duplicate however late (the import fetches after this request anyway).
    assert client.record("body-digest", repeat_window=60, now=NOW + 600) is False
    deliveries.update("body-digest", source_id="blog", status="imported", portal=client.site)
    assert client.record("body-digest", repeat_window=60, now=NOW + 59) is False
    # A minute after, the same body may be a new change at the blog: import again.
    assert client.record("body-digest", repeat_window=60, now=NOW + 61) is True
    assert client.record("body-digest", repeat_window=60, now=NOW + 62) is False


def test_repeat_window_setting(monkeypatch):
    assert deliveries.repeat_window({}) == 60.0
    assert deliveries.repeat_window({"PLONECELERY_DELIVERY_REPEAT_WINDOW": "5"}) == 5.0
    with pytest.raises(ValueError, match="positive"):
        deliveries.repeat_window({"PLONECELERY_DELIVERY_REPEAT_WINDOW": "0"})


def test_entries_written_before_the_index_are_still_found(client):
    """A log of the previous version: no index, entries keyed by the delivery id alone."""
    from BTrees.Length import Length
    from BTrees.OOBTree import OOBTree
    from BTrees.OOBTree import OOTreeSet

    entry = PersistentMapping(
        {
            "delivery_id": "old",
            "source_id": "blog",
            "event": "post.published",
            "remote_id": "1",
            "status": "queued",
            "task_id": "t",
            "error": None,
            "received": NOW,
            "updated": NOW,
        }
    )
    shard = PersistentMapping({"by_id": OOBTree({"old": entry}), "by_time": OOTreeSet()})
    shard["by_time"].insert((-NOW, "old"))
    length = Length()
    length.change(1)
    client.site[deliveries.ANNOTATION_KEY] = PersistentMapping(
        {"shards": OOBTree({"old-thread": shard}), "length": length}
    )
    assert client.record("old", now=NOW + 5) is False
    assert client.record("old", source_id="other", now=NOW + 5) is True
    deliveries.update("old", source_id="blog", status="imported", portal=client.site)
    assert deliveries.get("old", source_id="blog", portal=client.site)["status"] == "imported"
    client.commit()


def test_an_expired_delivery_id_counts_as_new(client):
    assert client.record("msg_1", now=NOW)
    assert client.record("msg_1", now=NOW + 6 * DAY) is False
    assert client.record("msg_1", now=NOW + 8 * DAY) is True
    assert [e["delivery_id"] for e in deliveries.list_deliveries(portal=client.site)] == [
        "msg_1",
        "msg_1",
    ]
    # The expired entry goes with the next trim.
    assert deliveries.trim(portal=client.site, now=NOW + 8 * DAY) == 1
    assert deliveries.count(portal=client.site) == 1


def test_retention_setting(client, monkeypatch):
    monkeypatch.setenv("PLONECELERY_DELIVERY_RETENTION_DAYS", "1")
    assert client.record("msg_1", now=NOW)
    assert client.record("msg_1", now=NOW + 2 * DAY) is True


def test_list_newest_first_by_source_with_limit(client):
    client.record("a", now=NOW, source_id="one")
    client.record("b", now=NOW + 1, source_id="two")
    client.record("c", now=NOW + 2, source_id="one")
    site = client.site
    assert [e["delivery_id"] for e in deliveries.list_deliveries(portal=site)] == ["c", "b", "a"]
    one = deliveries.list_deliveries(source_id="one", portal=site)
    assert [e["delivery_id"] for e in one] == ["c", "a"]
    assert len(deliveries.list_deliveries(limit=2, portal=site)) == 2
    assert deliveries.list_deliveries(source_id="three", portal=site) == []


def test_update(client):
    client.record("msg_1")
    deliveries.update("msg_1", status="failed", error="API down", task_id="t-1", portal=client.site)
    entry = deliveries.get("msg_1", portal=client.site)
    assert (entry["status"], entry["error"], entry["task_id"]) == ("failed", "API down", "t-1")
    deliveries.update("msg_1", status="imported", portal=client.site)
    entry = deliveries.get("msg_1", portal=client.site)
    assert (entry["status"], entry["error"], entry["task_id"]) == ("imported", None, "t-1")


def test_update_of_an_unknown_delivery_is_ignored(client):
    deliveries.update("gone", status="imported", portal=client.site)
    assert deliveries.get("gone", portal=client.site) is None


def test_unknown_status_is_refused(client):
    with pytest.raises(ValueError, match="unknown delivery status 'done'"):
        client.record("msg_1", status="done")
    client.record("msg_1")
    with pytest.raises(ValueError, match="unknown delivery status"):
        deliveries.update("msg_1", status="done", portal=client.site)


def test_reading_an_empty_site_writes_nothing(client):
    site = client.site
    assert deliveries.list_deliveries(portal=site) == []
    assert deliveries.get("x", portal=site) is None
    assert deliveries.count(portal=site) == 0
    assert deliveries.trim(portal=site) == 0
    assert deliveries.ANNOTATION_KEY not in site


# -- bounds and trimming --------------------------------------------------------------------------


def test_trim_removes_entries_past_retention(client):
    fill(client, 10, start=NOW - 10 * DAY)  # ten deliveries ten days ago
    fill(client, 5, start=NOW, prefix="new")
    assert deliveries.trim(portal=client.site, now=NOW + 10) == 10
    kept = [e["delivery_id"] for e in deliveries.list_deliveries(portal=client.site)]
    assert kept == [f"new{number:05d}" for number in reversed(range(5))]
    assert deliveries.count(portal=client.site) == 5
    client.commit()


def test_trim_keeps_at_most_max_entries(client, monkeypatch):
    monkeypatch.setenv("PLONECELERY_DELIVERY_MAX_ENTRIES", "20")
    fill(client, 50)
    assert deliveries.trim(portal=client.site, now=NOW + 100, batch=25) == 25
    assert deliveries.trim(portal=client.site, now=NOW + 100, batch=25) == 5
    assert deliveries.trim(portal=client.site, now=NOW + 100) == 0
    kept = [e["delivery_id"] for e in deliveries.list_deliveries(portal=client.site)]
    assert kept == [f"d{number:05d}" for number in reversed(range(30, 50))]
    assert deliveries.count(portal=client.site) == 20
    shards = client.site[deliveries.ANNOTATION_KEY]["shards"].values()
    assert sum(len(shard["by_id"]) for shard in shards) == 20


def test_record_asks_for_a_trim_when_over_bounds(client, queued_trims, monkeypatch):
    monkeypatch.setenv("PLONECELERY_DELIVERY_MAX_ENTRIES", "3")
    fill(client, 3)
    assert queued_trims == []
    client.record("one-too-many", now=NOW + 10)
    assert len(queued_trims) == 1
    # An entry older than the retention window also asks for a trim.
    monkeypatch.setenv("PLONECELERY_DELIVERY_MAX_ENTRIES", "100")
    queued_trims.clear()
    client.record("later", now=NOW + 8 * DAY)
    assert len(queued_trims) == 1


def test_trim_task_is_queued_at_most_once_per_interval(monkeypatch):
    sent = []
    monkeypatch.setattr(
        deliveries.trim_deliveries, "apply_async", lambda **kwargs: sent.append(kwargs)
    )
    monkeypatch.setattr(deliveries, "_last_trim_queued", 0.0)
    for _ in range(5):
        deliveries._queue_trim("site")
    assert sent == [{"site": "site"}]


def test_settings_are_checked():
    assert deliveries.settings({}) == (7 * DAY, 10_000)
    with pytest.raises(ValueError, match="PLONECELERY_DELIVERY_MAX_ENTRIES"):
        deliveries.settings({"PLONECELERY_DELIVERY_MAX_ENTRIES": "lots"})
    with pytest.raises(ValueError, match="positive"):
        deliveries.settings({"PLONECELERY_DELIVERY_RETENTION_DAYS": "0"})


# -- concurrency: what conflict resolution must merge ---------------------------------------------


def test_two_concurrent_inserts_both_commit(db, queued_trims):
    first = Client(db)
    fill(first, 200)
    first.tm.begin()
    second = Client(db)
    assert first.record("concurrent-a", now=NOW + 500)
    assert second.record("concurrent-b", now=NOW + 501)
    first.commit()
    second.commit()  # resolved, not a ConflictError
    check = Client(db)
    assert deliveries.get("concurrent-a", portal=check.site)
    assert deliveries.get("concurrent-b", portal=check.site)
    assert deliveries.count(portal=check.site) == 202
    for client in (first, second, check):
        client.close()


def test_status_update_does_not_conflict_with_new_deliveries(db, queued_trims):
    setup = Client(db)
    fill(setup, 100)
    setup.close()
    worker, webhook = Client(db), Client(db)
    deliveries.update("d00050", status="imported", portal=worker.site)
    webhook.record("fresh", now=NOW + 1000)
    webhook.commit()
    worker.commit()
    check = Client(db)
    assert deliveries.get("d00050", portal=check.site)["status"] == "imported"
    assert deliveries.get("fresh", portal=check.site)
    for client in (worker, webhook, check):
        client.close()


def test_the_same_delivery_twice_at_once_conflicts_then_is_a_duplicate(db, queued_trims):
    setup = Client(db)
    fill(setup, 100)
    setup.close()
    first, second = Client(db), Client(db)
    assert first.record("twice", now=NOW + 1000)
    assert second.record("twice", now=NOW + 1000)
    first.commit()
    with pytest.raises(ConflictError):
        second.commit()
    second.tm.abort()
    second.tm.begin()  # what Zope's retry of the request does
    assert second.record("twice", now=NOW + 1001) is False


def test_the_same_delivery_on_two_threads_at_once_is_accepted_once(db, queued_trims):
    """Two Zope threads (two shards) accept the same delivery at the same moment."""
    setup = Client(db)
    fill(setup, 100)
    setup.close()
    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def deliver():
        client = Client(db)
        try:
            for attempt in range(3):
                fresh = client.record("twice", now=NOW + 1000 + attempt)
                if attempt == 0:
                    barrier.wait(timeout=30)  # both have read the log: neither saw the other
                try:
                    client.commit()
                except ConflictError:
                    client.tm.abort()
                    client.tm.begin()  # Zope's publisher retries the request
                    continue
                outcomes.append(fresh)
                return
            errors.append("kept conflicting")
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(outcomes) == [False, True]
    check = Client(db)
    assert [e["delivery_id"] for e in deliveries.list_deliveries(portal=check.site)].count(
        "twice"
    ) == 1
    shards = check.site[deliveries.ANNOTATION_KEY]["shards"]
    assert len(shards) == 2, "the two threads wrote shards of their own"
    check.close()


def test_twenty_concurrent_deliveries_mostly_resolve(db, queued_trims):
    setup = Client(db)
    fill(setup, 500)
    setup.close()
    senders = 20
    barrier = threading.Barrier(senders)
    conflicts = []
    errors = []

    def deliver(number):
        client = Client(db)
        try:
            for attempt in range(5):
                # A retry redoes the whole request, as Zope's publisher does.
                assert client.record(f"msg_{number}", now=NOW + 1000 + number)
                if attempt == 0:
                    barrier.wait(timeout=30)  # all have read the same state, now all commit
                try:
                    client.commit()
                    return
                except ConflictError:
                    conflicts.append(number)
                    client.tm.abort()
                    client.tm.begin()
            errors.append(f"sender {number} kept conflicting")
        except Exception as exc:  # reported below: threads do not fail the test by themselves
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=deliver, args=(number,)) for number in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    check = Client(db)
    log = check.site[deliveries.ANNOTATION_KEY]
    assert deliveries.count(portal=check.site) == 500 + senders
    shards = list(log["shards"].values())
    in_id_index = sum(len(shard["by_id"]) for shard in shards)
    in_time_index = sum(len(shard["by_time"]) for shard in shards)
    assert in_id_index == in_time_index == 500 + senders
    # Listing merges every thread's shard, newest first.
    listed = deliveries.list_deliveries(portal=check.site, limit=1000)
    assert {f"msg_{number}" for number in range(senders)} <= {e["delivery_id"] for e in listed}
    assert [e["received"] for e in listed] == sorted((e["received"] for e in listed), reverse=True)
    assert all(deliveries.get(f"msg_{n}", portal=check.site) for n in range(senders))
    # Without conflict resolution 19 of the 20 first attempts would conflict.
    assert len(conflicts) < senders // 2, f"{len(conflicts)} conflicts"
    check.close()
