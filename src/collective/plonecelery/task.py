"""The ``task`` decorator and the Celery task class that runs inside Zope.

>>> from collective.plonecelery import task
>>> @task()
... def reindex(context, fields=()):
...     context.reindexObject(idxs=list(fields))
>>> result = reindex.delay(portal["news"], fields=["Title"])  # doctest: +SKIP

``delay``/``apply_async`` queue the call in the current transaction: the
message leaves when the transaction commits, never if it aborts. In the worker
the function runs in its own connection and transaction, in the Plone site it
was queued from, as the user who queued it.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from functools import cached_property
from typing import Any

import transaction
from celery import Task
from celery.exceptions import Ignore

from . import references
from .app import app
from .config import addon_settings
from .deadletters import record_failure
from .dispatch import HEADER
from .dispatch import RESULT_STAMP
from .dispatch import Message
from .dispatch import queue
from .dispatch import send_all
from .internals import wrote_only
from .outbox import records as outbox
from .taskids import owned_task_id
from .worker.environment import zope_environment
from .worker.process import get_db
from .zodb import retryable_errors

logger = logging.getLogger(__name__)


def current_site_path(site: Any = None) -> str:
    """Physical path of ``site``, or of the Plone site set up for this request."""
    if site is None:
        from zope.component.hooks import getSite

        site = getSite()
    if isinstance(site, str):
        return site
    if site is None or not hasattr(site, "getPhysicalPath"):
        raise RuntimeError(
            "No Plone site is set up: queue tasks from a request or script "
            "inside a site (zope.component.hooks.setSite), or pass site=."
        )
    return "/".join(site.getPhysicalPath())


def current_user() -> tuple[str | None, bool]:
    """``(user id or None for Anonymous, unrestricted)`` of the queuing code."""
    from AccessControl.SecurityManagement import getSecurityManager
    from AccessControl.users import UnrestrictedUser

    user = getSecurityManager().getUser()
    if user is None:
        return None, False
    userid = user.getId()
    # Code running as the system user (scripts, as_admin tasks) queues tasks
    # that are just as privileged, not tasks that fail as an unknown user.
    return userid, isinstance(user, UnrestrictedUser)


def _not_before(options: dict) -> float | None:
    """When a delayed task (countdown/eta) is due: the relay waits until then."""
    if options.get("countdown"):
        return time.time() + float(options["countdown"])
    eta = options.get("eta")
    if isinstance(eta, datetime.datetime):
        return eta.timestamp()
    return None


class ZopeTask(Task):
    """A Celery task that runs in a Plone site, in one ZODB transaction."""

    #: Run as an unrestricted user (``@task.as_admin()``).
    unrestricted = False
    #: With signing on, workers refuse a ``plonecelery`` header that was not signed.
    Request = "collective.plonecelery.signing:SignedRequest"

    @cached_property
    def addon_settings(self):
        return addon_settings()

    # -- queuing (Plone side) ---------------------------------------------

    def apply_async(
        self,
        args=None,
        kwargs=None,
        *,
        run_as: str | None = None,
        without_transaction: bool = False,
        dedupe: bool = False,
        site: Any = None,
        **options,
    ):
        """Queue a call; sent when the current transaction commits.

        ``run_as`` (trusted code only): run as this user id instead of the
        current one. ``without_transaction``: send now. ``dedupe``: identical
        calls in one transaction become one task, shared by all callers.
        ``site``: the site (object or path) when none is set up.

        Celery beat (and anything else that passes ``producer=``) sends at
        once: give the site in the entry's options, ``{"site": "/Plone"}``.
        """
        producer = options.pop("producer", None)
        if producer is not None:
            without_transaction = True
        headers = dict(options.pop("headers", None) or {})
        if HEADER not in headers:
            inherited = self._envelope_of_running_task(site=site, run_as=run_as)
            if inherited is not None:
                # A chain's next link, a chord's body, a link callback: Celery sends it
                # from the worker once the running task has committed and left its
                # site. It runs in that site, as that user; sent at once, as Celery does.
                without_transaction = True
            headers[HEADER] = inherited or self._envelope_for_queuing(site=site, run_as=run_as)
            args, kwargs = references.dump(args or (), kwargs or {})
        connection = self._queuing_connection(site)
        envelope = headers[HEADER]
        message = Message(
            task=self,
            task_id=options.pop("task_id", None)
            or owned_task_id(user=envelope.get("user"), site=envelope.get("site")),
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options={**options, "headers": headers},
            db=connection.db() if connection is not None else None,
        )
        if without_transaction:
            if self.app.conf.task_always_eager:
                send_all([message])
            else:
                self.send_message(message, producer=producer)
            return self.AsyncResult(message.task_id)
        task_id = queue(message, dedupe=dedupe)
        if task_id == message.task_id and self._use_outbox(connection):
            ref = self._add_outbox_record(connection, message)
            headers[HEADER] = {**headers[HEADER], "outbox": ref.to_json()}
        return self.AsyncResult(task_id)

    def _add_outbox_record(self, connection, message: Message) -> outbox.RecordRef:
        # A write like any other: plone.protect refuses it in a GET request
        # without a CSRF token, and rightly so, since the task may write as
        # the user. Queue tasks from POST requests that carry the token.
        return outbox.add(
            connection,
            task_name=self.name,
            task_id=message.task_id,
            args=message.args,
            kwargs=message.kwargs,
            options=message.options,
            not_before=_not_before(message.options),
        )

    def _use_outbox(self, connection) -> bool:
        return (
            connection is not None
            and self.addon_settings.outbox
            and not self.app.conf.task_always_eager
        )

    @staticmethod
    def _envelope_of_running_task(*, site: Any, run_as: str | None) -> dict | None:
        """Site and user of the Zope task this worker is running, when no site is set up.

        None when a site is (Plone code queues as usual) or when no Zope task runs.
        """
        from celery import current_task
        from zope.component.hooks import getSite

        if site is not None or getSite() is not None:
            return None
        running = current_task._get_current_object() if current_task else None
        envelope = running.envelope() if isinstance(running, ZopeTask) else None
        if not envelope or not envelope.get("site"):
            return None
        inherited = {key: envelope.get(key) for key in ("site", "user", "unrestricted")}
        if run_as is not None:
            inherited.update(user=run_as, unrestricted=False)
        return inherited

    def _envelope_for_queuing(self, *, site: Any, run_as: str | None) -> dict:
        userid, unrestricted = current_user()
        if run_as is not None:
            userid, unrestricted = run_as, False
        return {
            "site": current_site_path(site),
            "user": userid,
            "unrestricted": unrestricted,
        }

    @staticmethod
    def _queuing_connection(site: Any):
        """The ZODB connection of the queuing code's site, if any."""
        if site is None or isinstance(site, str):
            from zope.component.hooks import getSite

            site = getSite()
        return getattr(site, "_p_jar", None)

    def send_message(self, message: Message, *, producer=None):
        """Publish ``message`` to the broker now (used after commit)."""
        return super().apply_async(
            message.args,
            message.kwargs,
            task_id=message.task_id,
            producer=producer,
            **message.options,
        )

    # -- running (worker side) --------------------------------------------

    def envelope(self) -> dict | None:
        """Site and user of the running call, from the message headers."""
        request = self.request
        envelope = getattr(request, HEADER, None)
        if envelope is None:
            envelope = (getattr(request, "headers", None) or {}).get(HEADER)
        return envelope

    def __call__(self, *args, **kwargs):
        envelope = self.envelope()
        if envelope is None:
            # Called directly (``reindex(obj)``): plain function call, here.
            return self.run(*args, **kwargs)
        self._stamp_result(envelope)
        retryable = retryable_errors()
        try:
            with zope_environment(
                site_path=envelope["site"],
                userid=envelope.get("user"),
                unrestricted=self.unrestricted or bool(envelope.get("unrestricted")),
                server_url=self.addon_settings.server_url,
            ) as site:
                claimed = self._claim_outbox_record(site, envelope)
                args, kwargs = references.load(args, kwargs, site=site)
                result = self.run(*args, **kwargs)
                if claimed is not None and self._only_claim_written(site._p_jar, claimed):
                    # A read-only task: a ZODB commit only for the outbox claim
                    # would double its cost. Its result in the backend tells the
                    # relay it ran (the relay then marks the record done).
                    transaction.abort()
                else:
                    transaction.commit()
                return result
        except retryable as exc:
            raise self._retry_after_conflict(exc, envelope) from exc

    def _stamp_result(self, envelope: dict) -> None:
        """Who queued the call, where, when, and when it started, into its stored result.

        As a Celery stamp of the running request: Celery's extended results store stamps
        with the result (a column of the database backend, a key in Redis), so the
        task listing shows them without a write of its own.
        """
        request = self.request
        ref = envelope.get("outbox")
        stamped = list(request.stamped_headers or ())
        if RESULT_STAMP not in stamped:
            stamped.append(RESULT_STAMP)
        request.stamped_headers = stamped
        request.stamps = {
            **(request.stamps or {}),
            RESULT_STAMP: {
                "user": envelope.get("user"),
                "site": envelope.get("site"),
                "queued": ref[1] if ref else None,
                "started": time.time(),
            },
        }

    def _only_claim_written(self, connection, record) -> bool:
        stores_result = bool(self.app.conf.result_backend) and not (
            self.ignore_result or self.request.ignore_result
        )
        return stores_result and wrote_only(connection, record)

    def _claim_outbox_record(self, site, envelope: dict):
        """Mark our outbox record done in this transaction, or skip a duplicate.

        Returns the claimed record, or None when the call has no record.
        """
        ref = envelope.get("outbox")
        if not ref:
            return None
        ref = outbox.RecordRef.from_json(ref)
        state = outbox.claim(site._p_jar, ref)
        if state == outbox.PENDING:
            return outbox.find(site._p_jar, ref)
        task_id = self.request.id
        if state == "missing" and self.AsyncResult(task_id).state not in ("SUCCESS", "FAILURE"):
            logger.warning(
                "Discarding %s[%s]: it has no outbox record and no result, so the "
                "transaction that queued it never committed",
                self.name,
                task_id,
            )
        else:
            logger.info(
                "Skipping %s[%s]: already run (outbox record %s); this was a redelivery",
                self.name,
                task_id,
                state,
            )
        raise Ignore()

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Failed for good: keep a dead letter (and stop the outbox relay)."""
        envelope = self.envelope()
        if envelope is None:
            return
        try:
            record_failure(
                db=get_db(),
                task_name=self.name,
                task_id=task_id,
                args=args,
                kwargs=kwargs,
                envelope=envelope,
                exc=exc,
                traceback=str(einfo) if einfo is not None else "",
                attempts=self.request.retries + 1,
            )
        except Exception:
            logger.exception("Could not record the dead letter of %s[%s]", self.name, task_id)

    def _retry_after_conflict(self, exc: BaseException, envelope: dict):
        settings = self.addon_settings
        retries = self.request.retries
        # Exponential back-off with full jitter, so that the tasks that
        # conflicted with each other do not meet again at the same moment.
        countdown = random.uniform(
            0, min(settings.conflict_backoff_max, settings.conflict_backoff * 2**retries)
        )
        logger.info(
            "Task %s[%s] hit %s (%s); retry %d of %d in %.2fs",
            self.name,
            self.request.id,
            type(exc).__name__,
            exc,  # ZODB names the object (oid, class): what the tasks fought over
            retries + 1,
            settings.conflict_retries,
            countdown,
        )
        return self.retry(
            exc=exc,
            countdown=countdown,
            max_retries=settings.conflict_retries,
            headers={HEADER: envelope},
        )

    def retry(self, *args, **options):
        # The retry message is sent at once, not at the end of a transaction
        # (the task's own transaction has been aborted), and keeps the
        # site and user of the original call.
        options.setdefault("without_transaction", True)
        if "headers" not in options:
            envelope = self.envelope()
            if envelope is not None:
                options["headers"] = {HEADER: envelope}
        return super().retry(*args, **options)


class AdminTask(ZopeTask):
    """A task that runs unrestricted (``@task.as_admin()``)."""

    unrestricted = True


class TaskDecorator:
    """``@task()`` and ``@task.as_admin()``; options go to Celery's ``app.task``."""

    def __call__(self, function=None, **options):
        """A task that runs as the user who queued it.

        >>> @task(queue="imports", max_retries=5)  # doctest: +SKIP
        ... def import_post(source_id, remote_id): ...

        ``@task`` without parentheses works too.
        """
        if function is not None:
            return self._decorator(ZopeTask, options)(function)
        return self._decorator(ZopeTask, options)

    def as_admin(self, **options):
        """A task that runs unrestricted, whoever queued it."""
        return self._decorator(AdminTask, options)

    @staticmethod
    def _decorator(base: type[ZopeTask], options: dict):
        options.setdefault("base", base)
        # Our tasks belong to our app only, not to every Celery app in the process.
        options.setdefault("shared", False)

        def decorate(function):
            if not callable(function):
                raise TypeError(f"@task decorates functions, not {function!r}.")
            return app.task(**options)(function)

        return decorate


task = TaskDecorator()
