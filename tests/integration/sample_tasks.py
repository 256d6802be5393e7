"""Tasks the integration tests queue; the worker imports them via CELERY_IMPORTS."""

from plone import api
from ZODB.POSException import ConflictError

from collective.plonecelery import task


@task()
def create_document(container, doc_id, title):
    """Create a Document as the queuing user (security checks apply)."""
    api.content.create(container=container, type="Document", id=doc_id, title=title)
    return doc_id


@task.as_admin()
def create_document_as_admin(container, doc_id, title):
    from AccessControl import getSecurityManager

    api.content.create(container=container, type="Document", id=doc_id, title=title)
    return getSecurityManager().getUser().getId()


@task()
def whoami():
    """The user the task runs as, and what the site and request look like."""
    from zope.globalrequest import getRequest

    user = api.user.get_current()
    portal = api.portal.get()
    return {
        "user": user.getId(),
        "anonymous": api.user.is_anonymous(),
        "site": "/".join(portal.getPhysicalPath()),
        "url": portal.absolute_url(),
        "request": getRequest() is not None,
    }


@task()
def title_of(context):
    return context.Title()


@task()
def set_title(context, title):
    context.setTitle(title)
    context.reindexObject(idxs=["Title"])
    return title


@task(bind=True)
def conflict_then_succeed(self, container, doc_id, failures):
    """Writes, then raises ConflictError on the first ``failures`` attempts."""
    api.content.create(container=container, type="Document", id=doc_id, title="attempt")
    if self.request.retries < failures:
        raise ConflictError("forced conflict for the test")
    return self.request.retries


@task()
def write_then_fail(container, doc_id):
    api.content.create(container=container, type="Document", id=doc_id, title="doomed")
    raise ValueError("the task failed after writing")


@task()
def noop():
    return "ok"


def _runs(portal):
    from BTrees.OOBTree import OOBTree

    runs = getattr(portal, "_plonecelery_test_runs", None)
    if runs is None:
        runs = portal._plonecelery_test_runs = OOBTree()
    return runs


@task.as_admin()
def count_run(key, seconds=0.0):
    """Count how often the effect of this call was committed."""
    import time

    runs = _runs(api.portal.get())
    runs[key] = runs.get(key, 0) + 1
    if seconds:
        time.sleep(seconds)
    return key


@task.as_admin()
def slow_count_run(key, seconds):
    """Logs when it starts, then writes and sleeps (to be killed mid-task)."""
    import logging
    import time

    runs = _runs(api.portal.get())
    runs[key] = runs.get(key, 0) + 1
    logging.getLogger("sample_tasks").warning("slow task started %s", key)
    time.sleep(seconds)
    return key


@task()
def count_then_die(key, marker):
    """Counts, then, the first time only, kills its whole worker (pool process and main
    process) right after the task's transaction committed: before the result is stored
    and the message acknowledged."""
    import os
    import signal
    from pathlib import Path

    import transaction

    runs = _runs(api.portal.get())
    runs[key] = runs.get(key, 0) + 1
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))

        def die(committed):
            if committed:
                os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)

        transaction.get().addAfterCommitHook(die)
    return key


@task.as_admin()
def fail_unless_flag(key):
    portal = api.portal.get()
    if not getattr(portal, "_plonecelery_test_flag", False):
        raise RuntimeError(f"no flag set for {key}")
    runs = _runs(portal)
    runs[key] = runs.get(key, 0) + 1
    return key


@task()
def debug_me(context):
    """Stops in celery.contrib.rdb; the test drives the debugger over TCP."""
    from celery.contrib import rdb
    from plone import api  # noqa: F401 - for the person at the debugger prompt

    title = context.Title()
    rdb.set_trace()
    return title


@task()
def record_user(key):
    """Record who the task ran as, and whether unrestricted (signed-message tests)."""
    from AccessControl import getSecurityManager
    from AccessControl.users import UnrestrictedUser

    user = getSecurityManager().getUser()
    runs = _runs(api.portal.get())
    runs[key] = f"{user.getId()}:{isinstance(user, UnrestrictedUser)}"
    return key


@task.as_admin()
def routed_slow_import(key, seconds):
    """Routed to the imports queue by CELERY_TASK_ROUTES (see conftest.py); slow."""
    import time

    time.sleep(seconds)
    runs = _runs(api.portal.get())
    runs[key] = runs.get(key, 0) + 1
    return key


@task()
def report_steps(steps, seconds):
    """Reports its progress after each of ``steps`` steps of ``seconds``."""
    import time

    from collective.plonecelery import report_progress

    for done in range(1, steps + 1):
        time.sleep(seconds)
        report_progress(done, steps, message=f"step {done} of {steps}")
    return steps
