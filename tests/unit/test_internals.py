"""The private names of other libraries used in internals.py still work.

Pinned: the installed versions must be the ones in constraints.txt. When a pin moves,
this test fails on purpose: re-check each accessor against the new release, then
update the pin.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.MappingStorage import MappingStorage

from collective.plonecelery import internals

CONSTRAINTS = Path(__file__).parents[2] / "constraints.txt"


def pinned(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", CONSTRAINTS.read_text(), re.M | re.I)
    assert match, f"{name} is not pinned in constraints.txt"
    return match.group(1)


@pytest.mark.parametrize("library", internals.LIBRARIES)
def test_checked_against_the_pinned_version(library):
    assert importlib.metadata.version(library) == pinned(library), (
        f"{library} changed: re-check collective/plonecelery/internals.py against it"
    )


def test_zope_configured_reads_app_config():
    import App.config

    saved = App.config._config
    try:
        App.config._config = None
        assert internals.zope_configured() is False
        App.config._config = object()
        assert internals.zope_configured() is True
    finally:
        App.config._config = saved


def test_wrote_only_tells_a_lone_change_from_others():
    db = DB(MappingStorage())
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    root = connection.root()
    root["a"], root["b"] = PersistentMapping(), PersistentMapping()
    tm.commit()
    root["a"]["x"] = 1
    assert internals.wrote_only(connection, root["a"])
    root["b"]["y"] = 1
    assert not internals.wrote_only(connection, root["a"])
    tm.abort()
    root["a"]["x"] = 2
    connection.add(OOBTree())  # a new persistent object: added, not only changed
    assert not internals.wrote_only(connection, root["a"])
    tm.abort()
    connection.close()
    db.close()


def test_drop_prefetched_oids_empties_the_client_cache():
    from ZEO.ClientStorage import ClientStorage

    storage = ClientStorage.__new__(ClientStorage)  # no server needed for the attribute
    storage._oids = [b"\0" * 8, b"\0" * 7 + b"\1"]
    assert internals.drop_prefetched_oids(storage) == 2
    assert storage._oids == []


def test_celery_options_types_settings():
    options = internals.celery_options()
    assert options["broker_url"].type == "string"
    assert options["task_acks_late"].type == "bool"
    assert options["worker_prefetch_multiplier"].type == "int"


def test_set_default_serializer():
    from kombu.serialization import registry

    saved = (
        registry._default_encode,
        registry._default_content_type,
        registry._default_content_encoding,
    )
    try:
        internals.set_default_serializer("json")
        assert registry._default_content_type == "application/json"
    finally:
        (
            registry._default_encode,
            registry._default_content_type,
            registry._default_content_encoding,
        ) = saved


def test_mark_traversed_sets_the_publishers_steps():
    from io import BytesIO

    from ZPublisher.HTTPRequest import HTTPRequest
    from ZPublisher.HTTPResponse import HTTPResponse

    request = HTTPRequest(BytesIO(), {"SERVER_NAME": "x", "SERVER_PORT": "80"}, HTTPResponse())
    internals.mark_traversed(request)
    assert request._steps == ["noobject"]


def test_request_message_reads_a_worker_request():
    from celery import Celery
    from celery.worker.request import Request
    from kombu import Message

    app = Celery("internals-test", broker="memory://", set_as_current=False)

    @app.task(name="internals.add", shared=False)
    def add(x, y):
        return x + y

    headers = {"id": "t-1", "task": "internals.add", "plonecelery": {"user": "u"}}
    body = ((1, 2), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    message = Message(body=body, headers=headers, content_type="application/json")
    request = Request(message, app=app, decoded=True, task=add)
    got_app, got_headers, got_body = internals.request_message(request)
    assert got_app is app
    assert got_headers["plonecelery"] == {"user": "u"}
    assert got_body == body
