"""One picture of the task system, cheap enough for every page view and every scrape.

:func:`collect` reads, in one ZODB connection, the worker presences
(:mod:`..worker.presence`, which need no broadcast, so they work on every broker), the
outbox counts and its last relay run, the number of dead letters; and asks the broker
for the length of each known queue with a short timeout, so a broker that is down
makes the answer say so instead of hanging.

>>> status = collect(db=db, app=app)  # doctest: +SKIP
>>> status["workers"]["alive"], status["queues"][0]["messages"]  # doctest: +SKIP
(2, 0)
"""

from __future__ import annotations

import logging
import time

from .. import deadletters
from ..config import addon_settings
from ..outbox import records
from ..worker import presence
from ..zodb import own_connection

logger = logging.getLogger(__name__)

#: Seconds the broker may take to answer the queue lengths.
BROKER_TIMEOUT = 1.5


def queue_names(app) -> list[str]:
    """The default queue, the configured queues and those named in the task routes."""
    conf = app.conf
    names = [conf.task_default_queue]
    for queue in conf.task_queues or ():
        names.append(getattr(queue, "name", queue))
    routes = conf.task_routes
    for route in routes.values() if isinstance(routes, dict) else ():
        if isinstance(route, dict) and route.get("queue"):
            names.append(route["queue"])
    return list(dict.fromkeys(str(name) for name in names if name))


def queue_lengths(app, *, timeout: float = BROKER_TIMEOUT) -> dict:
    """``{"reachable": bool, "error": str|None, "queues": [{"name", "messages", "consumers"}]}``.

    A passive declare per queue: it counts the messages waiting (not those a worker
    holds), on AMQP, Redis and the SQLAlchemy transport alike. A queue that does not exist
    yet counts 0.
    """
    found = []
    try:
        with app.connection_for_read(connect_timeout=timeout / 2) as connection:
            # Two quick attempts, no back-off: a scrape must not wait for retries.
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
            for name in queue_names(app):
                found.append({"name": name, **_queue_length(connection, name)})
    except Exception as exc:  # noqa: BLE001 - any broker failure is the answer itself
        logger.info("Queue lengths unavailable: %s", exc)
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}", "queues": found}
    return {"reachable": True, "error": None, "queues": found}


def _queue_length(connection, name: str) -> dict:
    channel = connection.channel()
    try:
        ok = channel.queue_declare(queue=name, passive=True)
        return {"messages": ok.message_count, "consumers": ok.consumer_count}
    except connection.channel_errors:
        # No such queue (yet): AMQP closes the channel, virtual transports just say so.
        return {"messages": 0, "consumers": 0}
    finally:
        try:
            channel.close()
        except connection.channel_errors + connection.connection_errors:
            pass


def outbox_status(connection, *, now: float) -> dict:
    box = records.get_outbox(connection, create=False)
    counts = {records.PENDING: 0, records.DONE: 0, records.FAILED: 0, records.RETRIED: 0}
    oldest = None
    # One walk for the counts and the oldest pending record: this runs on every scrape.
    for _, record in records.iter_records(box) if box is not None else ():
        counts[record.state] = counts.get(record.state, 0) + 1
        if record.state == records.PENDING and (oldest is None or record.created < oldest):
            oldest = record.created
    last_run = getattr(box, "last_run", None) if box is not None else None
    return {
        "pending": counts[records.PENDING],
        "done": counts[records.DONE],
        "failed": counts[records.FAILED],
        "retried": counts[records.RETRIED],
        "oldest_pending_age": None if oldest is None else round(now - oldest, 1),
        "last_relay_run": last_run,
        "last_relay_run_age": None if last_run is None else round(now - last_run, 1),
        "last_relay_run_sent": getattr(box, "last_run_sent", None) if box is not None else None,
    }


def collect(*, db, app, now: float | None = None, broker: bool = True) -> dict:
    """Workers, queues, outbox and dead letters as one JSON-ready dict."""
    now = time.time() if now is None else now
    settings = addon_settings()
    with own_connection(db) as (connection, tm):
        tm.begin()
        seen = presence.read(connection, now=now, timeout=settings.outbox_started_timeout)
        outbox = outbox_status(connection, now=now)
        dead = len(deadletters.list_dead_letters(connection))
    alive = [p for p in seen if p.alive]
    return {
        "now": now,
        "workers": {
            "alive": len(alive),
            "nodes": sorted({p.nodename or p.host for p in alive}),
            "processes": [
                {**p.as_dict(), "running": sorted(p.running), "current": _current(p)} for p in alive
            ],
            "running_tasks": sum(len(p.running) for p in alive),
        },
        "broker": queue_lengths(app) if broker else None,
        "outbox": outbox,
        "dead_letters": dead,
    }


def _current(seen: presence.Seen) -> list[dict]:
    """The tasks a process runs now, longest running first: id, name, since."""
    found = [
        {"task_id": task_id, "name": name, "since": since}
        for task_id, (name, since) in seen.running.items()
    ]
    return sorted(found, key=lambda item: item["since"])
