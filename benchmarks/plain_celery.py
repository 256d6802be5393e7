"""A plain Celery app, the baseline: no Zope, no ZODB, no transaction.

``run.py`` starts its worker with ``python -m celery -A plain_celery worker``
and passes the settings in ``BENCH_PLAIN_SETTINGS`` (JSON). One worker gets
the very settings collective.plonecelery's worker uses, computed in ``run.py``,
so that the only difference between the two workers is Zope; another gets only
the broker, the result backend and its queue, that is Celery's own defaults.
This module imports nothing but Celery.
"""

from __future__ import annotations

import json
import os

from celery import Celery

SETTINGS_VARIABLE = "BENCH_PLAIN_SETTINGS"

# Not the current app: run.py also holds collective.plonecelery's app.
app = Celery("plain_celery", set_as_current=False)
if SETTINGS_VARIABLE not in os.environ:
    raise RuntimeError(
        f"Set {SETTINGS_VARIABLE} to the JSON Celery settings: start this worker "
        "through benchmarks/run.py, not by hand."
    )
app.config_from_object(json.loads(os.environ[SETTINGS_VARIABLE]))


@app.task(name="plain_celery.noop")
def noop():
    """The cheapest task Celery can run."""
    return "ok"


@app.task(name="plain_celery.sink")
def sink():
    """Sent to a queue nobody consumes: the request-side baseline (``apply_async``)."""
    return "never runs"
