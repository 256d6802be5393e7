"""The Redis result backend, subscribing only for results somebody waits for.

Celery's Redis backend subscribes the sending process to the result channel of every
task it sends (``on_task_call``), so that a later ``.get()`` cannot miss the result.
A Plone instance sends many tasks and waits for almost none,
and each send pays a subscribe and, when its result object is collected, an unsubscribe.
This backend leaves the subscribing to ``.get()``, which Celery does as it starts to wait,
after reading the stored result (so a result stored before is not missed).

``app.py`` selects it for ``redis://`` and ``rediss://`` result backends of the add-on's
own app (Celery's ``override_backends`` setting); other Celery apps in the process keep
Celery's own.
"""

from __future__ import annotations

from celery.backends import redis

#: Backend aliases of the add-on's app (the ``override_backends`` setting).
OVERRIDES = {
    "redis": "collective.plonecelery.results:RedisBackend",
    "rediss": "collective.plonecelery.results:RedisBackend",
}


class RedisBackend(redis.RedisBackend):
    def on_task_call(self, producer, task_id):
        """Sending subscribes to nothing: ``.get()`` subscribes when it waits."""
