"""Task ids that say who queued the task, to whoever holds the site's secret.

A task queued by a logged-in user in a site gets an id shaped like a UUID (32 hex
digits) whose first half is random and whose second half is an HMAC, under the site's
``plone.keyring`` system secret, of the first half, the user id and the site path.
``GET @celery-tasks/<id>`` checks it with :func:`is_owner` to show a task to the user
who queued it and to nobody else, without a record per task (which would cost a write
per task in the worker or in the request). Rotating the system ring's secret makes the
ids of tasks queued before it name nobody (Managers still see them).

>>> task_id = owned_task_id(user="jane", site="/Plone")  # doctest: +SKIP
>>> is_owner(task_id, user="jane", site="/Plone")  # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from celery.utils import uuid


def _site_secret() -> bytes | None:
    """The current site's ``plone.keyring`` system secret (None outside a site)."""
    from plone.keyring.interfaces import IKeyManager
    from zope.component import queryUtility

    manager = queryUtility(IKeyManager)
    return manager.secret().encode() if manager is not None else None


def _mac(nonce: str, user: str, site: str, secret: bytes) -> str:
    material = f"{nonce}\n{user}\n{site}".encode()
    return hmac.new(secret, material, hashlib.sha256).hexdigest()[:16]


def owned_task_id(*, user: str | None, site: str | None) -> str:
    """A new task id that :func:`is_owner` can tie to ``user`` in ``site``.

    Shaped like a UUID (32 hex digits): 16 random, 16 of HMAC. A plain random id for
    Anonymous, outside a site, or without the site's key manager.
    """
    secret = _site_secret() if user and site else None
    if secret is None:
        return uuid()
    nonce = secrets.token_hex(8)
    digits = nonce + _mac(nonce, user, site, secret)
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def is_owner(task_id: str, *, user: str | None, site: str) -> bool:
    """Whether ``task_id`` was made by :func:`owned_task_id` for ``user`` in ``site``."""
    digits = task_id.replace("-", "")
    secret = _site_secret() if user and len(digits) == 32 else None
    if secret is None:
        return False
    return hmac.compare_digest(digits[16:], _mac(digits[:16], user, site, secret))
