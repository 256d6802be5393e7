"""The Celery application of collective.plonecelery.

Plone processes queue through it; workers run it. Celery's own tools work
with it unchanged when ``ZOPE_CONF`` points at the instance's ``zope.conf``::

    ZOPE_CONF=etc/zope.conf celery -A collective.plonecelery.app flower

Settings are read when the app is first configured (see ``config.py``). The
worker's lifecycle (a ZODB per pool process) is installed by the fixup in
``worker/process.py``, which Celery loads by name, as it loads its Django fixup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points

from celery import Celery

from .config import addon_settings
from .config import settings_from_environ
from .results import OVERRIDES
from .signing import apply_signing
from .signing import check_policy
from .signing import signing_requested
from .worker.process import boot_zope_from_environ

logger = logging.getLogger(__name__)

#: Entry-point group listing modules whose tasks workers must import.
TASKS_ENTRY_POINT_GROUP = "plonecelery.tasks"

# Not the process's current or default app: Plone may host other Celery apps
# (and shared_task users), which must keep theirs. Our worker makes it current.
app = Celery(
    "collective.plonecelery",
    set_as_current=False,
    fixups=[*Celery.builtin_fixups, "collective.plonecelery.worker.process:fixup"],
)


def task_modules() -> tuple[str, ...]:
    """Modules named by ``plonecelery.tasks`` entry points, in a stable order."""
    return tuple(sorted({ep.value for ep in entry_points(group=TASKS_ENTRY_POINT_GROUP)}))


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
            # `celery -A collective.plonecelery.app ...`: boot Zope first,
            # since zope.conf's <environment> may carry CELERY_* settings.
            boot_zope_from_environ()
            settings = settings_from_environ()
            settings["imports"] = tuple(settings.get("imports") or ()) + task_modules()
            settings["override_backends"] = OVERRIDES
            if signing_requested(settings):
                apply_signing(settings)
            check_policy(settings)
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
app.steps["worker"].add("collective.plonecelery.outbox.relay:OutboxRelayStep")
# ... and for runs of the blog sources' schedule (re-sync, feed polling).
app.steps["worker"].add("collective.plonecelery.blogs.importer.schedule:BlogScheduleStep")


def check_configuration(event=None) -> None:
    """Read the settings now, so a bad ``CELERY_*`` value stops Zope at start-up
    (subscriber for IDatabaseOpenedWithRoot) instead of failing a request later."""
    app.conf.task_serializer  # noqa: B018 - loading the configuration is the point
    addon_settings()
