"""The outbox relay: sends again what is still pending (runs in workers).

Every worker asks for a relay run every ``PLONECELERY_OUTBOX_RELAY_INTERVAL``
seconds (:class:`OutboxRelayStep`, a worker bootstep); the run itself is a task,
:func:`relay_outbox`, so any one worker does it. A lease in the ZODB lets only one
relay work at a time.
"""

from __future__ import annotations

import logging
import time

from celery import bootsteps
from ZODB.POSException import ConflictError

from ..app import app
from ..config import addon_settings
from ..dispatch import Message
from ..worker.process import get_db
from ..zodb import own_connection
from ..zodb import writer_id
from .records import DONE
from .records import FAILED
from .records import Outbox
from .records import get_outbox
from .records import pending_records
from .records import sweep

logger = logging.getLogger(__name__)


def _take_lease(outbox: Outbox, *, owner: str, seconds: float, now: float) -> bool:
    if outbox.lease_owner not in (None, owner) and outbox.lease_until > now:
        return False
    outbox.lease_owner = owner
    outbox.lease_until = now + seconds
    return True


def relay(*, db, app, grace: float, retention: float, lease_seconds: float = 120.0) -> int:
    """Send again what is still pending after ``grace`` seconds; sweep old records.

    Returns how many messages were sent. Safe to call from several workers:
    only the holder of the lease works.
    """
    owner = f"{writer_id()}:relay"
    with own_connection(db) as (connection, tm):
        try:
            tm.begin()
            now = time.time()
            outbox = get_outbox(connection, create=False)
            if outbox is None:
                return 0
            if not _take_lease(outbox, owner=owner, seconds=lease_seconds, now=now):
                return 0
            try:
                tm.commit()
            except ConflictError:
                # Another relay took the lease at the same moment.
                return 0
            tm.begin()
            sent = _send_pending(outbox, app=app, older_than=now - grace)
            swept = sweep(outbox, now=now, retention=retention)
            outbox.lease_owner = None
            outbox.lease_until = 0.0
            tm.commit()
        except ConflictError:
            logger.info("Outbox relay hit a conflict; the next run picks up where it left off")
            return 0
    if sent or swept:
        logger.info("Outbox relay sent %d pending task(s), swept %d record(s)", sent, swept)
    return sent


def _send_pending(outbox: Outbox, *, app, older_than: float) -> int:
    sent = 0
    for _, record in pending_records(outbox, older_than=older_than):
        task = app.tasks.get(record.task_name)
        if task is None or not hasattr(task, "send_message"):
            logger.error(
                "Outbox record %s names unknown task %r; left pending",
                record.task_id,
                record.task_name,
            )
            continue
        state = app.AsyncResult(record.task_id).state
        if state in ("SUCCESS", "FAILURE"):
            # Read-only tasks leave their record pending (their result
            # says they ran): close it here, many in one commit.
            record.state = DONE if state == "SUCCESS" else FAILED
            record.finished = time.time()
            continue
        if state != "PENDING":
            # A worker has started it (task_track_started): a second copy
            # would only do the same work and lose at commit.
            continue
        message = Message(
            task=task,
            task_id=record.task_id,
            args=list(record.args),
            kwargs=dict(record.kwargs),
            options=_plain(record.options),
        )
        task.send_message(message)
        record.attempts += 1
        record.last_sent = time.time()
        sent += 1
    return sent


def _plain(value):
    # Persistent copies of dicts/lists come back as plain ones for kombu.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class OutboxRelayStep(bootsteps.StartStopStep):
    """Worker bootstep: ask for a relay run every ``outbox_relay_interval`` s."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        self.settings = addon_settings()
        self.timer_entry = None

    def start(self, worker):
        interval = self.settings.outbox_relay_interval
        if interval > 0 and self.settings.outbox:
            self.timer_entry = worker.timer.call_repeatedly(interval, self.tick, args=(interval,))

    def tick(self, interval: float) -> None:
        try:
            relay_outbox.apply_async(expires=interval * 2, ignore_result=True)
        except Exception:
            logger.warning("Could not queue the outbox relay", exc_info=True)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


# The name is stored nowhere but is what workers of every version route: keep it.
@app.task(
    name="collective.plonecelery.outbox.relay_outbox",
    ignore_result=True,
    shared=False,
    Request="collective.plonecelery.signing:SignedRequest",
)
def relay_outbox():
    """Send outbox records that are still pending (runs in a worker)."""
    settings = addon_settings()
    return relay(
        db=get_db(),
        app=app,
        grace=settings.outbox_grace,
        retention=settings.outbox_retention,
    )
