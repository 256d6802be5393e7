"""Importing the add-on leaves other Celery apps alone: current app, settings, tasks, signals.

Each check runs in a fresh interpreter, since Celery's current and default app
are process-wide state that other tests may already have set.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json

    import celery
    from celery import Celery
    from celery import shared_task
    from celery import _state

    # A plain Celery app of somebody else's, made current as Celery does by default.
    other = Celery("other", broker="memory://", set_as_current=True)
    other.conf.update(task_default_queue="other-queue", task_acks_late=False)

    # (Celery adds tasks made with the default shared=True, and shared_task, to
    # every app in the process: that is the other app's choice. Ours are not shared.)
    @other.task(name="other.add", shared=False)
    def add(x, y):
        return x + y

    @shared_task(name="other.shared_mul")
    def mul(x, y):
        return x * y

    import collective.plonecelery.app as ours
    import collective.plonecelery.blogs.importer  # noqa: F401 - registers @task() tasks
    import collective.plonecelery.outbox.relay  # noqa: F401 - registers relay_outbox
    import collective.plonecelery.blogs.deliveries  # noqa: F401

    current_after_import = celery.current_app._get_current_object()
    other.finalize()
    ours.app.finalize()
    print(json.dumps({
        "current_is_other": current_after_import is other,
        "current_is_ours": current_after_import is ours.app,
        "default_is_ours": _state.default_app is ours.app,
        "other_queue": other.conf.task_default_queue,
        "other_acks_late": other.conf.task_acks_late,
        "other_broker": other.conf.broker_url,
        "ours_queue": ours.app.conf.task_default_queue,
        "ours_acks_late": ours.app.conf.task_acks_late,
        "ours_broker": ours.app.conf.broker_url,
        "other_tasks": sorted(name for name in other.tasks if not name.startswith("celery.")),
        "ours_tasks": sorted(name for name in ours.app.tasks if not name.startswith("celery.")),
        "shared_task_app_is_other": mul._get_current_object().app is other,
        "add": add.apply(args=(2, 3)).get(),
    }))
    """
)

ALONE = textwrap.dedent(
    """
    import json
    import celery
    from celery import _state
    import collective.plonecelery.app as ours
    import collective.plonecelery.blogs.importer  # noqa: F401
    print(json.dumps({
        "default_app_set": _state.default_app is not None,
        "current_is_ours": celery.current_app._get_current_object() is ours.app,
    }))
    """
)


def run_script(script: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY_", "ZOPE_CONF"))
    }
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_apps() -> dict:
    return run_script(SCRIPT)


def test_importing_the_addon_does_not_take_over_the_current_app(two_apps):
    assert two_apps["current_is_other"]
    assert not two_apps["current_is_ours"]
    assert not two_apps["default_is_ours"]


def test_importing_the_addon_alone_sets_no_current_or_default_app():
    result = run_script(ALONE)
    assert not result["default_app_set"]
    assert not result["current_is_ours"]


def test_each_app_keeps_its_own_settings(two_apps):
    assert two_apps["other_queue"] == "other-queue"
    assert two_apps["other_acks_late"] is False
    assert two_apps["other_broker"] == "memory://"
    assert two_apps["ours_queue"] == "celery"
    assert two_apps["ours_acks_late"] is True
    assert two_apps["ours_broker"].startswith("sqla+sqlite:")


def test_each_app_keeps_its_own_tasks(two_apps):
    ours, other = set(two_apps["ours_tasks"]), set(two_apps["other_tasks"])
    assert "other.add" in other and "other.add" not in ours
    assert "collective.plonecelery.outbox.relay_outbox" in ours
    assert not {name for name in other if name.startswith("collective.plonecelery.")}
    assert two_apps["add"] == 5


def test_shared_task_binds_to_the_current_app_not_ours(two_apps):
    # shared_task is Celery's "every app" task: it stays bound to the current app.
    assert two_apps["shared_task_app_is_other"]
    assert "other.shared_mul" in two_apps["other_tasks"]


class FakeWorker:
    """Stands in for the WorkController Celery sends worker_init/worker_shutdown with."""

    def __init__(self, app):
        self.app = app


@pytest.fixture
def opened(monkeypatch):
    """Records open_db/close_db calls made by our signal handlers."""
    from celery import signals

    from collective.plonecelery.worker import process as worker

    calls = []
    monkeypatch.setattr(worker, "_booted_conf", "/etc/zope.conf")
    monkeypatch.setattr(worker, "open_db", lambda: calls.append("open"))
    monkeypatch.setattr(worker, "close_db", lambda: calls.append("close"))
    yield calls
    # Leave the fixup as a process that is no worker at all.
    signals.worker_init.send(sender=FakeWorker(None))


def test_signal_handlers_ignore_another_apps_worker(opened):
    from celery import Celery
    from celery import signals

    other = Celery("other-worker", broker="memory://", set_as_current=False)
    signals.worker_init.send(sender=FakeWorker(other))
    signals.worker_process_init.send(sender="other@host")
    signals.worker_process_shutdown.send(sender="other@host", pid=1, exitcode=0)
    signals.worker_shutdown.send(sender=FakeWorker(other))
    assert opened == []


def test_signal_handlers_act_for_our_worker(opened):
    from celery import signals

    from collective.plonecelery.app import app

    signals.worker_init.send(sender=FakeWorker(app))
    signals.worker_process_init.send(sender="ours@host")
    signals.worker_process_shutdown.send(sender="ours@host", pid=1, exitcode=0)
    signals.worker_shutdown.send(sender=FakeWorker(app))
    assert opened == ["open", "close", "close"]


@pytest.mark.parametrize(
    "variable",
    [
        "CELERY_LOG_FILE",
        "CELERY_LOG_LEVEL",
        "CELERY_LOG_REDIRECT",
        "CELERY_LOG_REDIRECT_LEVEL",
        "CELERY_CONFIG_MODULE",
        "CELERY_SKIP_CHECKS",
    ],
)
def test_variables_celerys_cli_sets_are_not_settings(variable, caplog):
    from collective.plonecelery.config import settings_from_environ

    with caplog.at_level(logging.WARNING, logger="collective.plonecelery"):
        settings_from_environ({variable: "1"})
    assert caplog.text == ""
