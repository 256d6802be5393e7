"""A worker bootstep that queues a task every few seconds (the outbox relay, the blog schedule).

No Celery beat process to start: every worker asks, the task runs on whichever worker takes
it, and the task itself makes sure (with a lease) that one run works at a time.
"""

from __future__ import annotations

import logging

from celery import bootsteps

from ..config import addon_settings

logger = logging.getLogger(__name__)


class PeriodicStep(bootsteps.StartStopStep):
    """Call :meth:`send` every :meth:`interval` seconds on the worker's timer (0: never)."""

    requires = {"celery.worker.components:Timer"}
    #: What is queued, for the warning when queuing fails.
    what = "a periodic task"

    def __init__(self, worker, **kwargs):
        self.settings = addon_settings()
        self.timer_entry = None

    def interval(self) -> float:
        raise NotImplementedError

    def send(self, interval: float) -> None:
        """Queue the task; it may expire after ``interval * 2`` (the next one is coming)."""
        raise NotImplementedError

    def start(self, worker):
        interval = self.interval()
        if interval > 0:
            self.timer_entry = worker.timer.call_repeatedly(interval, self.tick, args=(interval,))

    def tick(self, interval: float) -> None:
        try:
            self.send(interval)
        except Exception:
            # A broker hiccup must not stop the timer: the next tick tries again.
            logger.warning("Could not queue %s", self.what, exc_info=True)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
