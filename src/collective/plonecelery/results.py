"""The Redis result backend: one round trip per stored state, and no subscription per send.

Celery's Redis backend subscribes the sending process to the result channel of every
task it sends (``on_task_call``), so that a later ``.get()`` cannot miss the result.
A Plone instance sends many tasks and waits for almost none,
and each send pays a subscribe and, when its result object is collected, an unsubscribe.
This backend leaves the subscribing to ``.get()``, which Celery does as it starts to wait,
after reading the stored result (so a result stored before is not missed).

Celery stores each state (``STARTED``, then ``SUCCESS``) with a GET, to leave a stored
``SUCCESS`` alone (a redelivered task must not overwrite it), then a SET and a PUBLISH:
two round trips, four per task, a quarter of a small task's time in a worker (see
docs/benchmarks.rst). This backend does the same check, the SET and the PUBLISH in one
Lua script, so in one round trip, and atomically. It does so for JSON results without
compression, which the script can read; anything else takes Celery's own path.

It also keeps the ids of stored tasks in a sorted set, scored by the time of their
last stored state (:attr:`RedisBackend.index_key`, in the same Lua call): Redis keeps no
order of its keys, and the recent-task listing (``@celery-tasks``, the Task queue panel)
pages through that set newest first. Entries older than the results' expiry are trimmed
as new ones arrive, and the set never holds more than :data:`MAX_INDEXED` ids.

``app.py`` selects it for ``redis://`` and ``rediss://`` result backends of the add-on's
own app (Celery's ``override_backends`` setting); other Celery apps in the process keep
Celery's own.
"""

from __future__ import annotations

import time
from functools import cached_property

from celery import states
from celery.backends import redis
from celery.exceptions import BackendStoreError
from celery.utils.serialization import bytes_to_str

#: Backend aliases of the add-on's app (the ``override_backends`` setting).
OVERRIDES = {
    "redis": "collective.plonecelery.results:RedisBackend",
    "rediss": "collective.plonecelery.results:RedisBackend",
}


#: Result ids with this suffix are the owner records of :mod:`.progress`, not tasks.
OWNER_SUFFIX = ".owner"
#: The most task ids the recent-task index keeps (with results that never expire).
MAX_INDEXED = 100_000

#: KEYS[1]: the task's key, KEYS[2]: the recent-task index ('' for none); ARGV: the
#: encoded state, its expiry in seconds (0: none), the task id, now, the most ids kept.
#: Returns 0 when a ``SUCCESS`` is stored (nothing written), -1 when the stored value
#: is not JSON (the caller falls back to Celery's path), 1 when written and published.
STORE_UNLESS_SUCCESS = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, meta = pcall(cjson.decode, current)
    if not ok or type(meta) ~= 'table' then
        return -1
    end
    if meta['status'] == 'SUCCESS' then
        return 0
    end
end
local expires = tonumber(ARGV[2])
if expires > 0 then
    redis.call('SETEX', KEYS[1], expires, ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
if KEYS[2] ~= '' then
    local now = tonumber(ARGV[4])
    redis.call('ZADD', KEYS[2], now, ARGV[3])
    if expires > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - expires)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
end
return 1
"""


class RedisBackend(redis.RedisBackend):
    #: The sorted set of stored task ids, scored by the time of their last state.
    index_key = "plonecelery-recent-tasks"

    def on_task_call(self, producer, task_id):
        """Sending subscribes to nothing: ``.get()`` subscribes when it waits."""

    @cached_property
    def _store_unless_success(self):
        return self.client.register_script(STORE_UNLESS_SUCCESS)

    def recent(self, start: int, stop: int) -> list[str]:
        """Task ids of the index, newest first, from ``start`` to ``stop`` (inclusive)."""
        return [
            bytes_to_str(task_id) for task_id in self.client.zrevrange(self.index_key, start, stop)
        ]

    def indexed(self) -> int:
        """How many task ids the index holds."""
        return self.client.zcard(self.index_key)

    def metas(self, task_ids: list[str]) -> list[dict | None]:
        """The stored meta of each task (None where it has expired), in one MGET."""
        if not task_ids:
            return []
        values = self.client.mget([self.get_key_for_task(task_id) for task_id in task_ids])
        return [None if value is None else self.decode_result(value) for value in values]

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        """Celery's ``_store_result`` (never overwrite a ``SUCCESS``) in one round trip."""
        if self.serializer != "json" or self.compression:
            return super()._store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        task_id = bytes_to_str(task_id)
        key = self.get_key_for_task(task_id)
        index = "" if task_id.endswith(OWNER_SUFFIX) else self.index_key
        written = self.ensure(
            self._store_unless_success,
            ([key, index], [value, int(expires or 0), task_id, time.time(), MAX_INDEXED]),
        )
        if written == -1:
            return super()._store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        return result
