"""Recent tasks from the result backend, a page at a time.

Two backends keep an order to page by, and neither loads 10,000 results to show 25:

- Celery's database result backend (``db+...``, the add-on's default): ``LIMIT``/
  ``OFFSET`` on Celery's result table, newest first;
- the add-on's Redis result backend (:mod:`..results`): the sorted set of task ids it
  keeps, newest first, and one ``MGET`` for the page. With a filter by state or name the
  index is read newest first in chunks until :data:`FILTER_SCAN_LIMIT` ids have been
  looked at: the total is then the number of matches among those.

:func:`page` returns ``None`` for other backends.

>>> items, total = page(app, start=0, size=25, state="FAILURE")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime

from celery import states

from ..dispatch import RESULT_STAMP
from ..progress import OWNER_SUFFIX
from ..progress import PROGRESS
from ..results import RedisBackend


def _json_safe(value):
    """The value as JSON would carry it: other objects as their text."""
    return json.loads(json.dumps(value, default=repr))


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _timestamp(value) -> float | None:
    """Seconds since the epoch of an ISO text or datetime (Celery's are UTC, often naive)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _iso_time(seconds) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def task_data(task_id: str, meta: dict) -> dict:
    """One task's state, progress, result or error from its result-backend meta.

    With the stamp a Zope task adds as it starts (``dispatch.RESULT_STAMP``): ``user``,
    ``site``, ``queued`` (for tasks with an outbox record), ``started`` and, once it
    ended, ``duration`` in seconds.
    """
    state = meta.get("status") or states.PENDING
    info = meta.get("result")
    data = {
        "task_id": task_id,
        "state": state,
        "progress": None,
        "result": None,
        "error": None,
        "date_done": _iso(meta.get("date_done")),
    }
    for key in ("name", "worker", "retries", "queue"):
        if meta.get(key) is not None:
            data[key] = meta[key]
    run = meta.get(RESULT_STAMP)
    if isinstance(run, list) and len(run) == 1:
        run = run[0]  # a stamp that travelled through a message comes back as a list
    if isinstance(run, dict):
        data["user"] = run.get("user")
        data["site"] = run.get("site")
        data["queued"] = _iso_time(run.get("queued"))
        data["started"] = _iso_time(run.get("started"))
        done = _timestamp(meta.get("date_done"))
        started = run.get("started")
        if done is not None and isinstance(started, int | float):
            data["duration"] = round(max(0.0, done - started), 3)
    if state == PROGRESS and isinstance(info, dict):
        data["progress"] = {key: info.get(key) for key in ("done", "total", "percent", "message")}
    elif state in states.EXCEPTION_STATES and info is not None:
        data["error"] = f"{type(info).__name__}: {info}" if isinstance(info, Exception) else info
    elif state == states.SUCCESS:
        data["result"] = _json_safe(info)
    return data


#: With a filter, how many of the newest ids of the Redis index are looked at, at most.
FILTER_SCAN_LIMIT = 20_000
#: Ids read from the Redis index per round trip while filtering.
SCAN_CHUNK = 500


def page(app, *, start: int, size: int, state: str | None = None, name: str | None = None):
    """``(items, total)`` of the tasks matching ``state`` and ``name``, newest first;
    ``None`` when the result backend cannot page. ``ValueError`` for a name filter
    without Celery's extended results (no names stored then)."""
    from celery.backends.database import DatabaseBackend

    backend = app.backend
    if isinstance(backend, RedisBackend):
        return _redis_page(backend, start=start, size=size, state=state, name=name)
    if not isinstance(backend, DatabaseBackend):
        return None
    return _database_page(backend, start=start, size=size, state=state, name=name)


def _redis_page(backend, *, start: int, size: int, state: str | None, name: str | None):
    if name and not backend.app.conf.result_extended:
        raise ValueError("filtering by task name needs Celery's result_extended setting")
    if not state and not name:
        task_ids = backend.recent(start, start + size - 1)
        metas = backend.metas(task_ids)
        items = [
            task_data(task_id, meta) for task_id, meta in zip(task_ids, metas, strict=True) if meta
        ]
        return items, backend.indexed()
    wanted = state.upper() if state else None
    items, matched = [], 0
    for offset in range(0, FILTER_SCAN_LIMIT, SCAN_CHUNK):
        task_ids = backend.recent(offset, offset + SCAN_CHUNK - 1)
        for task_id, meta in zip(task_ids, backend.metas(task_ids), strict=True):
            if not meta or (wanted and meta.get("status") != wanted):
                continue
            if name and meta.get("name") != name:
                continue
            if start <= matched < start + size:
                items.append(task_data(task_id, meta))
            matched += 1
        if len(task_ids) < SCAN_CHUNK:
            break
    return items, matched


def _database_page(backend, *, start: int, size: int, state: str | None, name: str | None):
    from celery.backends.database import session_cleanup

    model = backend.task_cls
    if name and not hasattr(model, "name"):
        raise ValueError("filtering by task name needs Celery's result_extended setting")
    session = backend.ResultSession()
    with session_cleanup(session):
        query = session.query(model).filter(~model.task_id.like(f"%{OWNER_SUFFIX}"))
        if state:
            query = query.filter(model.status == state.upper())
        if name:
            query = query.filter(model.name == name)
        total = query.count()
        rows = query.order_by(model.date_done.desc(), model.id.desc()).offset(start).limit(size)
        items = []
        for row in rows.all():
            data = row.to_dict()
            # Stamps are one encoded column: the Zope task's run stamp is among them.
            stamps = data.pop("stamps", None)
            stamps = backend.decode(stamps) if stamps is not None else None
            if isinstance(stamps, dict) and isinstance(stamps.get("stamps"), dict):
                data.update(stamps["stamps"])
            data["result"] = backend._decode_stored_result(data["result"])
            # Errors as exceptions again (they are stored as type, module and message).
            items.append(task_data(row.task_id, backend.meta_from_decoded(data)))
    return items, total
