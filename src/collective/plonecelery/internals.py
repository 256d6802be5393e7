"""Private attributes of other libraries that the add-on relies on, each with why.

Nothing else in the package touches another library's private names: when one of
these libraries changes, this module (and ``tests/unit/test_internals.py``, which
pins the versions they were checked against) is the one place to look.
"""

from __future__ import annotations

#: The libraries whose private parts are used below (checked against these versions
#: by the test suite, which reads the pins in constraints.txt).
LIBRARIES = ("ZODB", "ZEO", "celery", "kombu", "Zope")


def zope_configured() -> bool:
    """Whether Zope's configuration is loaded in this process.

    ``App.config`` has no public "is it configured?" (``getConfiguration()`` makes a
    default one); ``celery -A collective.plonecelery.app`` must boot Zope only if not.
    """
    import App.config

    return App.config._config is not None


def wrote_only(connection, obj) -> bool:
    """True if ``obj`` is the one object changed, and nothing added, in ``connection``.

    A read-only task skips the commit of its outbox claim (half its cost); ZODB's
    Connection has no public way to list what the transaction changed.
    """
    registered = connection._registered_objects
    return not connection._added and all(item is obj for item in registered)


def drop_prefetched_oids(storage) -> int:
    """Forget the object ids a ZEO ClientStorage fetched ahead; returns how many.

    A restarted FileStorage server hands out ids again that it gave a client before
    (see ``zeo.py``); ClientStorage keeps them in ``_oids`` with no public reset.
    """
    count = len(storage._oids)
    storage._oids = []
    return count


def celery_options() -> dict:
    """Celery's table of settings and their types (``celery.app.defaults._OPTIONS``).

    Typing ``CELERY_*`` variables by Celery's own table keeps them in step with Celery;
    it has no public form.
    """
    from celery.app.defaults import _OPTIONS

    return _OPTIONS


def set_default_serializer(name: str) -> None:
    """Make ``name`` kombu's default serializer (signed messages: ``auth``).

    ``kombu.serialization.registry`` exposes no public setter; Celery's own
    ``setup_security`` calls the same private method.
    """
    from kombu.serialization import registry

    registry._set_default_serializer(name)


def mark_traversed(request) -> None:
    """Make a request built by hand look traversed (``request._steps``).

    Views' ``absolute_url()`` and plone.protect read it; a worker's request never
    goes through the publisher that sets it.
    """
    request._steps = ["noobject"]


def request_message(request) -> tuple:
    """``(app, headers, body)`` of a worker's ``celery.worker.request.Request``.

    The signed-envelope check runs as the request is made, before the task; Celery's
    Request keeps the decoded headers and body in ``_request_dict`` and ``_payload``.
    """
    return request._app, request._request_dict, request._payload


def sqlalchemy_broker_engines() -> list:
    """The SQLAlchemy engines of kombu's SQLAlchemy transport in this process.

    The transport keeps one engine per URL in the class attribute ``Channel._engines``
    and never looks at the process id: a pool process forked after the main process
    connected would share its pooled database connections (its sockets) with it.
    Empty unless that transport was imported.
    """
    import sys

    module = sys.modules.get("kombu.transport.sqlalchemy")
    if module is None:
        return []
    return [engine for engine, _session in module.Channel._engines.values()]
