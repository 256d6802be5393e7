"""The outbox relay: sends again what is still pending (runs in workers).

Every worker asks for a relay run every ``PLONECELERY_OUTBOX_RELAY_INTERVAL``
seconds (:class:`OutboxRelayStep`, a worker bootstep); the run itself is a task,
:func:`relay_outbox`, so any one worker does it. A lease in the ZODB lets only one
relay work at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from ..app import app
from ..config import addon_settings
from ..dispatch import Message
from ..worker import presence
from ..worker.periodic import PeriodicStep
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


def relay(
    *,
    db,
    app,
    grace: float,
    retention: float,
    started_timeout: float = 120.0,
    lease_seconds: float = 120.0,
) -> int:
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
            started = StartedTasks.read(
                connection, outbox, now=now, timeout=started_timeout, writable=True
            )
            sent = _send_pending(outbox, app=app, older_than=now - grace, started=started)
            started.forget_others()
            swept = sweep(outbox, now=now, retention=retention)
            registry = presence.get_registry(connection, create=False)
            if registry is not None:
                swept += presence.forget(registry, older_than=now - retention)
            outbox.lease_owner = None
            outbox.lease_until = 0.0
            # For the operations pages: "outbox growing, nothing relayed" shows here.
            outbox.last_run = now
            outbox.last_run_sent = sent
            tm.commit()
        except ConflictError:
            logger.info("Outbox relay hit a conflict; the next run picks up where it left off")
            return 0
    if sent or swept:
        logger.info("Outbox relay sent %d pending task(s), swept %d record(s)", sent, swept)
    return sent


@dataclass(frozen=True)
class Verdict:
    """What the relay does with a started task, and when."""

    action: str  # "running", "wait" or "send"
    reason: str
    due: float | None = None


class StartedTasks:
    """Tells a started task that still runs from one whose worker is gone.

    ``unreported`` remembers, per task id, since when no live worker process has
    reported a started task (the relay alone writes it, so tasks never conflict
    with it); a task that started since the last beat of its process is in it for
    a beat or two, a task whose whole worker died without a trace until the timeout.
    """

    def __init__(
        self, seen: list[presence.Seen], unreported, *, now: float, timeout: float, writable: bool
    ):
        self.writable = writable
        self.alive = {task_id for task_id, p in presence.iter_running(seen) if p.alive}
        self.dead = {task_id: p for task_id, p in presence.iter_running(seen) if not p.alive}
        self.unreported = unreported
        self.now = now
        self.timeout = timeout
        self.touched: set[str] = set()

    @classmethod
    def read(cls, connection, outbox: Outbox, *, now: float, timeout: float, writable: bool):
        unreported = getattr(outbox, "unreported", None)
        if unreported is None and writable:
            unreported = outbox.unreported = OOBTree()
        seen = presence.read(connection, now=now, timeout=timeout)
        return cls(
            seen,
            {} if unreported is None else unreported,
            now=now,
            timeout=timeout,
            writable=writable,
        )

    def verdict(self, task_id: str) -> Verdict:
        if task_id in self.alive:
            return Verdict("running", "a live worker process runs it")
        gone = self.dead.get(task_id)
        if gone is not None:
            return Verdict(
                "send",
                f"its worker process {gone.nodename or gone.host} (pid {gone.pid}) "
                f"stopped beating {self.now - gone.last_beat:.0f}s ago",
                due=gone.last_beat + self.timeout,
            )
        since = self.unreported.get(task_id, self.now)
        self.touched.add(task_id)
        if self.writable and task_id not in self.unreported:
            self.unreported[task_id] = since
        due = since + self.timeout
        return Verdict(
            "send" if due <= self.now else "wait",
            f"no live worker process has reported it for {self.now - since:.0f}s",
            due=due,
        )

    def sent(self, task_id: str) -> None:
        self.touched.discard(task_id)
        if self.writable and task_id in self.unreported:
            del self.unreported[task_id]

    def forget_others(self) -> None:
        """Drop what is remembered of tasks that ran since (relay runs only)."""
        if not self.writable:
            return
        for task_id in [key for key in self.unreported if key not in self.touched]:
            del self.unreported[task_id]


def _send_pending(outbox: Outbox, *, app, older_than: float, started: StartedTasks) -> int:
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
        result = app.AsyncResult(record.task_id)
        state = result.state
        if state in ("SUCCESS", "FAILURE"):
            # Read-only tasks leave their record pending (their result
            # says they ran): close it here, many in one commit.
            record.state = DONE if state == "SUCCESS" else FAILED
            record.finished = time.time()
            continue
        if state == "STARTED":
            verdict = started.verdict(record.task_id)
            if verdict.action != "send":
                continue
            logger.warning(
                "Outbox relay: %s[%s] was started, and %s: sending it again (attempt %d)",
                record.task_name,
                record.task_id,
                verdict.reason,
                record.attempts + 1,
            )
            started.sent(record.task_id)
        elif state != "PENDING":
            # RETRY: its next run is already queued, with its countdown.
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


def started_report(*, db, app, timeout: float, now: float | None = None) -> list[dict]:
    """Pending outbox records whose task a worker started, with the relay's verdict.

    For ``plonecelery workers --started`` and the operations pages: what is running,
    what is orphaned, and when the relay sends it again. Writes nothing.
    """
    now = time.time() if now is None else now
    report = []
    with own_connection(db) as (connection, tm):
        tm.begin()
        outbox = get_outbox(connection, create=False)
        if outbox is None:
            return []
        started = StartedTasks.read(connection, outbox, now=now, timeout=timeout, writable=False)
        # Every pending record (the watermarks this may move are aborted with the read).
        for _, record in pending_records(outbox, older_than=float("inf")):
            result = app.AsyncResult(record.task_id)
            if result.state != "STARTED":
                continue
            info = result.info if isinstance(result.info, dict) else {}
            verdict = started.verdict(record.task_id)
            report.append(
                {
                    "task_id": record.task_id,
                    "task_name": record.task_name,
                    "worker": info.get("hostname"),
                    "pid": info.get("pid"),
                    "attempts": record.attempts,
                    "last_sent": record.last_sent,
                    "verdict": verdict.action,
                    "reason": verdict.reason,
                    "due": verdict.due,
                }
            )
    return report


def _plain(value):
    # Persistent copies of dicts/lists come back as plain ones for kombu.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class OutboxRelayStep(PeriodicStep):
    """Worker bootstep: ask for a relay run every ``outbox_relay_interval`` s."""

    what = "the outbox relay"

    def interval(self) -> float:
        return self.settings.outbox_relay_interval if self.settings.outbox else 0.0

    def send(self, interval: float) -> None:
        relay_outbox.apply_async(expires=interval * 2, ignore_result=True)


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
        started_timeout=settings.outbox_started_timeout,
    )
