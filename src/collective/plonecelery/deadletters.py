"""Dead letters: tasks that failed for good, kept for a person to look at.

A task whose retries are exhausted, or that raised an error that is not
retried, leaves a :class:`DeadLetter` in the ZODB root: task name, arguments,
user, site, error, traceback, attempts and times. The Python API below (and
``plonecelery deadletters list|show|retry|purge``) works on them::

    from collective.plonecelery import deadletters
    for letter in deadletters.list_dead_letters(connection):
        print(letter.task_id, letter.task_name, letter.error)
    deadletters.retry(connection, task_id)   # queue it again, now
"""

from __future__ import annotations

import logging
import time

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from ZODB.POSException import ConflictError

from .dispatch import HEADER
from .dispatch import Message
from .outbox import records as outbox
from .taskids import owned_task_id
from .zodb import own_connection
from .zodb import root_object

logger = logging.getLogger(__name__)

ROOT_KEY = "collective.plonecelery.deadletters"


class DeadLetter(Persistent):
    """One task that failed for good."""

    def __init__(self, **fields):
        self.task_id: str = fields["task_id"]
        self.task_name: str = fields["task_name"]
        self.args: list = fields.get("args") or []
        self.kwargs: dict = fields.get("kwargs") or {}
        self.headers: dict = fields.get("headers") or {}
        self.site: str | None = fields.get("site")
        self.user: str | None = fields.get("user")
        self.error: str = fields.get("error", "")
        self.traceback: str = fields.get("traceback", "")
        self.attempts: int = fields.get("attempts", 1)
        self.queued: float | None = fields.get("queued")
        self.failed: float = fields.get("failed") or time.time()

    def as_dict(self) -> dict:
        return {
            name: getattr(self, name)
            for name in (
                "task_id",
                "task_name",
                "args",
                "kwargs",
                "site",
                "user",
                "error",
                "traceback",
                "attempts",
                "queued",
                "failed",
            )
        }


def _letters(connection, *, create: bool = False) -> OOBTree | None:
    return root_object(connection, ROOT_KEY, OOBTree, create=create)


def add(connection, letter: DeadLetter) -> None:
    """Store ``letter`` in the current transaction of ``connection``."""
    _letters(connection, create=True)[letter.task_id] = letter


def list_dead_letters(connection) -> list[DeadLetter]:
    """All dead letters, oldest failure first."""
    letters = _letters(connection)
    return sorted(letters.values(), key=lambda letter: letter.failed) if letters else []


def get(connection, task_id: str) -> DeadLetter:
    """One dead letter; ``KeyError`` with a helpful message if there is none."""
    letters = _letters(connection)
    if not letters or task_id not in letters:
        raise KeyError(f"No dead letter for task {task_id!r}: see 'deadletters list'.")
    return letters[task_id]


def purge(connection, task_id: str | None = None) -> int:
    """Remove one dead letter, or all of them; returns how many went."""
    letters = _letters(connection)
    if not letters:
        return 0
    if task_id is not None:
        get(connection, task_id)
        del letters[task_id]
        return 1
    count = len(letters)
    letters.clear()
    return count


def retry(connection, task_id: str, *, app) -> str:
    """Queue the failed call again, at once, as a new task; returns its id.

    The dead letter is removed in the current transaction: commit it.
    """
    letter = get(connection, task_id)
    task = app.tasks.get(letter.task_name)
    if task is None or not hasattr(task, "send_message"):
        raise KeyError(
            f"Task {letter.task_name!r} is not registered here: import its module "
            "(CELERY_IMPORTS or a plonecelery.tasks entry point) and try again."
        )
    envelope = {key: value for key, value in dict(letter.headers).items() if key != "outbox"}
    # Still the queuing user's task: @celery-tasks/<id> shows it to them.
    new_id = owned_task_id(user=envelope.get("user"), site=envelope.get("site"))
    task.send_message(
        Message(
            task=task,
            task_id=new_id,
            args=list(letter.args),
            kwargs=dict(letter.kwargs),
            options={"headers": {HEADER: envelope}},
        )
    )
    ref = dict(letter.headers).get("outbox")
    if ref:
        outbox.mark_retried(connection, outbox.RecordRef.from_json(ref))
    del _letters(connection)[task_id]
    logger.info("Dead letter %s (%s) queued again as %s", task_id, letter.task_name, new_id)
    return new_id


def record_failure(*, db, task_name, task_id, args, kwargs, envelope, exc, traceback, attempts):
    """Write the dead letter (and fail the outbox record) in a transaction of its own."""
    with own_connection(db) as (connection, tm):
        for _ in range(5):
            tm.begin()
            queued = None
            ref = envelope.get("outbox")
            if ref:
                ref = outbox.RecordRef.from_json(ref)
                outbox.mark_failed(connection, ref)
                queued = ref.created
            add(
                connection,
                DeadLetter(
                    task_id=task_id,
                    task_name=task_name,
                    args=list(args or ()),
                    kwargs=dict(kwargs or {}),
                    headers=dict(envelope),
                    site=envelope.get("site"),
                    user=envelope.get("user"),
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback or "",
                    attempts=attempts,
                    queued=queued,
                ),
            )
            try:
                tm.commit()
                break
            except ConflictError:
                tm.abort()
    logger.error(
        "Task %s[%s] failed for good after %d attempt(s): %s; kept as a dead letter",
        task_name,
        task_id,
        attempts,
        exc,
    )
