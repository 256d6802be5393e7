"""The Celery application of collective.plonecelery.

Plone processes queue through it; workers run it. Celery's own tools work
with it unchanged when ``ZOPE_CONF`` points at the instance's ``zope.conf``::

    ZOPE_CONF=etc/zope.conf celery -A collective.plonecelery.app flower

Settings are read when the app is first configured (see ``config.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import entry_points

from celery import Celery
from celery import signals

from .config import settings_from_environ
from .signing import apply_signing
from .signing import signing_requested

logger = logging.getLogger("collective.plonecelery")

#: Entry-point group listing modules whose tasks workers must import.
TASKS_ENTRY_POINT_GROUP = "plonecelery.tasks"

# Not the process's current or default app: Plone may host other Celery apps
# (and shared_task users), which must keep theirs. Our worker makes it current.
app = Celery("collective.plonecelery", set_as_current=False)

#: True in a worker of this app (and its pool processes), set by worker_init.
_our_worker = False


def task_modules() -> tuple[str, ...]:
    """Modules named by ``plonecelery.tasks`` entry points, in a stable order."""
    return tuple(sorted({ep.value for ep in entry_points(group=TASKS_ENTRY_POINT_GROUP)}))


def _zope_configured_here() -> bool:
    import App.config

    return App.config._config is not None


class EnvironmentSettings(Mapping):
    """Celery's configuration source: read from the environment on first use.

    (A mapping rather than an ``on_configure`` handler: Celery logs and
    swallows errors raised by signal handlers, and a bad setting must stop
    the process with a message naming it.)
    """

    def __init__(self):
        self._settings: dict | None = None

    @property
    def settings(self) -> dict:
        if self._settings is None:
            zope_conf = os.environ.get("ZOPE_CONF")
            if zope_conf and not _zope_configured_here():
                # `celery -A collective.plonecelery.app ...`: boot Zope first,
                # since zope.conf's <environment> may carry CELERY_* settings.
                from .worker import boot_zope

                boot_zope(zope_conf)
            settings = settings_from_environ()
            settings["imports"] = tuple(settings.get("imports") or ()) + task_modules()
            if signing_requested(settings):
                apply_signing(settings)
            self._settings = settings
        return self._settings

    def __getitem__(self, key):
        return self.settings[key]

    def __iter__(self):
        return iter(self.settings)

    def __len__(self):
        return len(self.settings)


app.config_from_object(EnvironmentSettings())
# Every worker asks for outbox relay runs (a string: loaded with the worker).
app.steps["worker"].add("collective.plonecelery.outbox:OutboxRelayStep")


@signals.worker_init.connect(weak=False)
def _note_our_worker(sender=None, **kwargs) -> None:
    # The signals below are sent for every Celery app's worker: act for ours only.
    global _our_worker
    _our_worker = getattr(sender, "app", None) is app


@signals.worker_process_init.connect(weak=False)
def _open_db_after_fork(**kwargs) -> None:
    from . import worker

    if _our_worker and worker._booted_conf is not None:
        worker.open_db()


@signals.worker_process_shutdown.connect(weak=False)
def _close_db(**kwargs) -> None:
    from . import worker

    if _our_worker:
        worker.close_db()


@signals.worker_shutdown.connect(weak=False)
def _close_db_at_worker_shutdown(sender=None, **kwargs) -> None:
    from . import worker

    if getattr(sender, "app", None) is app:
        worker.close_db()


def check_configuration(event=None) -> None:
    """Read the settings now, so a bad ``CELERY_*`` value stops Zope at start-up
    (subscriber for IDatabaseOpenedWithRoot) instead of failing a request later."""
    app.conf.task_serializer  # noqa: B018 - loading the configuration is the point
