"""Send task messages when, and only when, the queuing transaction commits.

Each transaction that queues tasks gets one :class:`PendingMessages`, kept in
the transaction's own data (``Transaction.data``), with a single after-commit
hook. Queuing is a list append (plus a dict lookup with ``dedupe=True``): no
network and no scan over the other tasks, whatever their number.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from types import SimpleNamespace
from typing import Any

import transaction
from kombu.utils.json import dumps

from .worker.process import use_database

logger = logging.getLogger(__name__)

_KEY = "collective.plonecelery.pending"

#: After a failed send, skip sending for this many seconds (outboxed messages
#: only), so a broker outage does not slow every committing request down.
BROKER_RETRY_AFTER = 10.0
_broker = SimpleNamespace(unavailable_until=0.0)  # process-wide, like the broker


#: The message header that carries the site, the user and the outbox record.
HEADER = "plonecelery"
#: The Celery stamp a running task adds to its stored result: user, site, queued, started.
RESULT_STAMP = "plonecelery_run"


@dataclass
class Message:
    """One task call waiting for its transaction to commit."""

    task: Any
    task_id: str
    args: list
    kwargs: dict
    options: dict = field(default_factory=dict)
    db: Any = None  # the ZODB the call came from, for eager runs

    @property
    def outboxed(self) -> bool:
        """Whether an outbox record backs this message (the relay can resend it)."""
        return "outbox" in (self.options.get("headers") or {}).get(HEADER, {})


class PendingMessages:
    """The messages queued in one transaction, sent by its after-commit hook."""

    def __init__(self, txn: transaction.interfaces.ITransaction):
        self.messages: list[Message] = []
        self._dedupe: dict[str, Message] = {}
        txn.addAfterCommitHook(self._after_commit)

    @classmethod
    def of(cls, txn) -> PendingMessages:
        try:
            return txn.data(_KEY)
        except KeyError:
            pending = cls(txn)
            txn.set_data(_KEY, pending)
            return pending

    def add(self, message: Message, *, dedupe: bool = False) -> str:
        """Queue ``message``; returns the id of the task that will run it."""
        if dedupe:
            key = dumps(
                [message.task.name, message.args, message.kwargs, message.options],
                sort_keys=True,
            )
            first = self._dedupe.setdefault(key, message)
            if first is not message:
                return first.task_id
        self.messages.append(message)
        return message.task_id

    def _after_commit(self, committed: bool) -> None:
        if not committed:
            return
        send_all(self.messages)


def send_all(messages: list[Message]) -> None:
    """Send (or, in eager mode, run) ``messages`` now, in order."""
    if not messages:
        return
    app = messages[0].task.app
    if app.conf.task_always_eager:
        for message in messages:
            run_eager(message)
        return
    outboxed = [m for m in messages if m.outboxed]
    if len(outboxed) == len(messages) and time.monotonic() < _broker.unavailable_until:
        # The broker failed us a moment ago; don't make this request wait for
        # it again. The records are in the outbox: the relay sends them.
        logger.info(
            "Broker recently unreachable: %d task(s) left to the outbox relay", len(messages)
        )
        return
    try:
        with app.producer_or_acquire() as producer:
            for message in messages:
                message.task.send_message(message, producer=producer)
    except Exception:
        _broker.unavailable_until = time.monotonic() + BROKER_RETRY_AFTER
        lost = len(messages) - len(outboxed)
        logger.warning(
            "Could not send %d task message(s) after commit: %d stay in the outbox "
            "and are relayed when the broker is reachable, %d had no outbox record "
            "and are lost",
            len(messages),
            len(outboxed),
            lost,
            exc_info=True,
        )


def run_eager(message: Message) -> None:
    """Run a task at once in a helper thread, as a worker would."""

    def target():
        with use_database(message.db):
            message.task.apply(
                args=message.args,
                kwargs=message.kwargs,
                task_id=message.task_id,
                headers=message.options.get("headers"),
                throw=False,
            )

    # A thread of its own has its own transaction, site, request and
    # security manager, exactly like a worker, and leaves ours untouched.
    thread = threading.Thread(target=target, name=f"plonecelery-eager-{message.task_id}")
    thread.start()
    thread.join()


def queue(message: Message, *, dedupe: bool = False) -> str:
    """Queue ``message`` in the current transaction."""
    return PendingMessages.of(transaction.get()).add(message, dedupe=dedupe)
