"""Worker presence: which worker processes are alive, and what each one is running.

Every process that runs tasks (a prefork pool process, or the main process of a
``solo``/``threads`` worker) keeps a :class:`Presence` in the ZODB, refreshed every
``PLONECELERY_WORKER_HEARTBEAT`` seconds by a daemon thread of its own: host, pid,
worker name, pool, start time, last beat and the ids of the tasks it is running.

The outbox relay reads it to tell a task that is still running from one whose
worker died (:mod:`..outbox.relay`); ``plonecelery workers`` and the operations
pages read it to show who is online. It needs no broadcast, so it works on every
broker: kombu's SQLAlchemy transport, the default, has no fanout exchange, and
without one Celery's ``inspect ping`` never gets an answer.

Why a thread: a process busy with a long task keeps beating, so the task is not
taken for orphaned while it runs. Why the ZODB: every worker has it already,
whatever the broker. Each process writes only its own :class:`Presence`, so beats
never conflict with each other or with tasks; the tree itself changes only when a
process registers, and when the relay forgets processes gone for a day.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from BTrees.OOBTree import OOBTree
from persistent import Persistent

from ..zodb import ensure_root_object
from ..zodb import own_connection
from ..zodb import retryable_errors
from ..zodb import root_object

logger = logging.getLogger(__name__)

ROOT_KEY = "collective.plonecelery.workers"


class Registry(Persistent):
    """All presences of one ZODB, keyed by ``host:pid:started``."""

    def __init__(self):
        self.processes = OOBTree()


class Presence(Persistent):
    """One worker process, as it last said."""

    def __init__(self, *, key: str, nodename: str, host: str, pid: int, pool: str, started: float):
        self.key = key
        self.nodename = nodename
        self.host = host
        self.pid = pid
        self.pool = pool
        self.started = started
        self.last_beat = started
        self.stopped: float | None = None
        #: ``{task_id: (task_name, since)}`` of the tasks running now.
        self.running: dict[str, tuple[str, float]] = {}
        #: How many tasks this process has finished since it started.
        self.processed = 0


@dataclass(frozen=True)
class Seen:
    """A presence as read, with its verdict at the time of reading."""

    key: str
    nodename: str
    host: str
    pid: int
    pool: str
    started: float
    last_beat: float
    stopped: float | None
    running: dict
    alive: bool
    processed: int = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def get_registry(connection, *, create: bool = True) -> Registry | None:
    return root_object(connection, ROOT_KEY, Registry, create=create)


def ensure_registry(db) -> None:
    """Create the registry at start-up, so that pool processes never race to create it."""
    ensure_root_object(db, ROOT_KEY, Registry)


def read(connection, *, now: float, timeout: float) -> list[Seen]:
    """Every presence, oldest first; ``alive`` when it beat within ``timeout`` seconds
    and has not stopped."""
    registry = get_registry(connection, create=False)
    if registry is None:
        return []
    found = []
    for presence in registry.processes.values():
        found.append(
            Seen(
                key=presence.key,
                nodename=presence.nodename,
                host=presence.host,
                pid=presence.pid,
                pool=presence.pool,
                started=presence.started,
                last_beat=presence.last_beat,
                stopped=presence.stopped,
                running=dict(presence.running),
                alive=presence.stopped is None and presence.last_beat > now - timeout,
                # Presences written before 1.0.0a2 have no count.
                processed=getattr(presence, "processed", 0),
            )
        )
    return sorted(found, key=lambda seen: seen.started)


def forget(registry: Registry, *, older_than: float) -> int:
    """Remove presences that have not beaten since ``older_than`` (a time)."""
    gone = [key for key, presence in registry.processes.items() if presence.last_beat < older_than]
    for key in gone:
        del registry.processes[key]
    return len(gone)


# What this process is running now: written by the task signals, read by the beat.
_running: dict[str, tuple[str, float]] = {}
_processed = 0
_running_lock = threading.Lock()


def task_started(task_id: str, task_name: str) -> None:
    with _running_lock:
        _running[task_id] = (task_name, time.time())


def task_ended(task_id: str) -> None:
    global _processed
    with _running_lock:
        if _running.pop(task_id, None) is not None:
            _processed += 1


def processed_count() -> int:
    """How many tasks this process has finished (succeeded or not)."""
    with _running_lock:
        return _processed


def running_now() -> dict[str, tuple[str, float]]:
    with _running_lock:
        return dict(_running)


class Heartbeat:
    """The presence of this process, kept fresh by a daemon thread.

    >>> beat = Heartbeat(db, nodename="celery@host", pool="prefork", interval=10)
    >>> beat.start()  # doctest: +SKIP
    """

    def __init__(self, db, *, nodename: str, pool: str, interval: float):
        self.db = db
        self.interval = interval
        started = time.time()
        host = socket.gethostname()
        pid = os.getpid()
        self.identity = {
            "key": f"{host}:{pid}:{started:.6f}",
            "nodename": nodename,
            "host": host,
            "pid": pid,
            "pool": pool,
            "started": started,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return self.identity["key"]

    def start(self) -> Heartbeat:
        """Write the presence now (before the process takes a task), then beat."""
        self.beat()
        self._thread = threading.Thread(target=self._run, name="plonecelery-heartbeat", daemon=True)
        self._thread.start()
        logger.info(
            "Worker process %s (%s) beats every %gs",
            self.key,
            self.identity["nodename"],
            self.interval,
        )
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self, *, stopped: bool = False) -> bool:
        """Write last beat and running tasks; False if this beat could not be written."""
        try:
            with own_connection(self.db) as (connection, tm):
                tm.begin()
                registry = get_registry(connection)
                presence = registry.processes.get(self.key)
                if presence is None:
                    presence = registry.processes[self.key] = Presence(**self.identity)
                now = time.time()
                presence.last_beat = now
                presence.running = running_now()
                presence.processed = processed_count()
                if stopped:
                    presence.stopped = now
                    presence.running = {}
                tm.commit()
            return True
        except (*retryable_errors(), OSError) as exc:
            # ZEO away for a moment, or two processes registering at once: next beat.
            logger.debug("Heartbeat of %s not written: %r", self.key, exc)
            return False
        except Exception:
            logger.warning("Heartbeat of %s failed", self.key, exc_info=True)
            return False

    def stop(self) -> None:
        """Stop beating and say so: a stopped process is not waited for."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        self.beat(stopped=True)


def iter_running(seen: list[Seen]) -> Iterator[tuple[str, Seen]]:
    """``(task_id, presence)`` for every task any presence says it runs."""
    for presence in seen:
        for task_id in presence.running:
            yield task_id, presence
