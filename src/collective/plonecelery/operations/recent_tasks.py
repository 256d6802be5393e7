"""Recent tasks from the result backend, a page at a time.

The paging happens in the database (``LIMIT``/``OFFSET`` on Celery's result table, newest
first), so a backend holding 10,000 results never loads them whole. Only Celery's
database result backend (``db+...``) keeps an order to page by: :func:`page` returns
``None`` for the others (Redis and other key-value stores).

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


def page(app, *, start: int, size: int, state: str | None = None, name: str | None = None):
    """``(items, total)`` of the tasks matching ``state`` and ``name``, newest first;
    ``None`` when the result backend cannot page. ``ValueError`` for a name filter
    without Celery's extended results (no names stored then)."""
    from celery.backends.database import DatabaseBackend
    from celery.backends.database import session_cleanup

    backend = app.backend
    if not isinstance(backend, DatabaseBackend):
        return None
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
