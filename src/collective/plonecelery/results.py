"""The Redis result backend, subscribing only for results somebody waits for.

Celery's Redis backend subscribes the sending process to the result channel of every
task it sends (``on_task_call``), so that a later ``.get()`` cannot miss the result.
A Plone instance sends many tasks and waits for almost none: the subscriptions grow
without bound and each send pays a round trip. This backend subscribes in ``.get()``
instead, then reads the stored result once, so a result that arrived before the
subscription is not missed.

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


class ResultConsumer(redis.ResultConsumer):
    def consume_from(self, task_id):
        super().consume_from(task_id)
        # Subscribed when the waiting starts: the result may be stored already.
        meta = self.backend.client.get(self._get_key_for_task(task_id))
        if meta:
            self.on_state_change(self._decode_result(meta), None)


class RedisBackend(redis.RedisBackend):
    ResultConsumer = ResultConsumer

    def on_task_call(self, producer, task_id):
        """Sending subscribes to nothing: ``.get()`` does (see :class:`ResultConsumer`)."""
