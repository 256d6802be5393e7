"""The WebSub subscriptions of feed sources: what we asked a hub for, and what it answered.

The add-on subscribes to a feed's hub itself (see ``importer/websub.py``, the worker side).
This module keeps the state, in the site's annotations under :data:`WEBSUB_KEY`: source id ->
``PersistentMapping``, apart from the configuration (the worker's and the hub's writes never
conflict with a Manager's edits) and kept after a source is removed until the hub has
verified the unsubscribe.

Usage::

    from collective.plonecelery.blogs import subscriptions

    secret = subscriptions.request("blog", mode="subscribe", hub=..., topic=..., callback=...)
    subscriptions.verify("blog", mode="subscribe", topic=..., lease_seconds=864000)  # the GET
    subscriptions.secrets_for("blog")      # the secrets a notification may be signed with
    subscriptions.info("blog")             # JSON-ready state, no secret

The keys of a state: ``status`` (``queued``, ``pending``, ``subscribed``, ``denied``,
``failed``), the active subscription (``hub``, ``topic``, ``callback``, ``secret``,
``expires``, ``lease_seconds``, ``verified_at``), ``pending`` (the subscribe request the hub
has not verified yet, with its own fresh secret), ``leaving`` (an unsubscribe request not
verified yet), ``last_error``/``error_at``/``failures``, ``reason`` (of a denial).
Secrets leave only through :func:`secrets_for` and :func:`request`.
"""

from __future__ import annotations

import secrets as secrets_module
import time
from datetime import UTC
from datetime import datetime
from typing import Any

from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from zope.annotation.interfaces import IAnnotations

WEBSUB_KEY = "collective.plonecelery.websub"
#: The longest lease believed (seconds): a hub's absurd ``hub.lease_seconds`` is cut to it.
MAX_LEASE = 10 * 366 * 86400.0
#: A request the hub has not verified after this long (seconds) is sent again.
PENDING_TIMEOUT = 600.0
#: Statuses of a subscription, as :func:`info` shows them.
STATUSES = ("queued", "pending", "subscribed", "denied", "failed", "unsubscribed")


def _portal(portal):
    if portal is not None:
        return portal
    from plone import api

    return api.portal.get()


def _states(portal, *, create: bool) -> OOBTree | None:
    annotations = IAnnotations(_portal(portal))
    states = annotations.get(WEBSUB_KEY)
    if states is None and create:
        states = annotations[WEBSUB_KEY] = OOBTree()
    return states


def get(source_id: str, *, portal=None) -> PersistentMapping | None:
    """The state of ``source_id``'s subscription (secrets included: do not show it), or None."""
    states = _states(portal, create=False)
    return states.get(source_id) if states is not None else None


def _state(source_id: str, *, portal) -> PersistentMapping:
    states = _states(portal, create=True)
    state = states.get(source_id)
    if state is None:
        state = states[source_id] = PersistentMapping({"status": "queued"})
    return state


def note_queued(source_id: str, *, now: float | None = None, portal=None) -> None:
    """A subscribe task was queued (Plone side): the schedule does not ask again meanwhile."""
    state = _state(source_id, portal=portal)
    state["queued_at"] = time.time() if now is None else now
    if state.get("status") in (None, "denied", "failed"):
        state["status"] = "queued"


def request(
    source_id: str,
    *,
    mode: str,
    hub: str,
    topic: str,
    callback: str,
    allow_private: bool = False,
    now: float | None = None,
    portal=None,
) -> str:
    """Record a ``subscribe`` or ``unsubscribe`` request about to be sent; the secret to send.

    A subscribe gets a fresh random secret, unless a request to the same hub and topic is
    still pending (a retry of the same request: the hub may verify either one). The
    verification GET is accepted only for what is recorded here.
    """
    if mode not in ("subscribe", "unsubscribe"):
        raise ValueError(f"mode must be subscribe or unsubscribe, not {mode!r}")
    now = time.time() if now is None else now
    state = _state(source_id, portal=portal)
    entry = {
        "hub": hub,
        "topic": topic,
        "callback": callback,
        "allow_private": allow_private,
        "requested_at": now,
    }
    if mode == "unsubscribe":
        # Kept after the source is removed: the hub's GET is checked against it, and a
        # request that could not be sent is sent again (see leaving_due).
        expires = state.get("expires") if state.get("topic") == topic else None
        state["leaving"] = PersistentMapping({**entry, "expires": expires})
        return ""
    pending = state.get("pending")
    if pending and (pending["hub"], pending["topic"]) == (hub, topic):
        secret = pending["secret"]
    else:
        # 32 bytes of randomness; hubs take secrets of up to 200 bytes.
        secret = secrets_module.token_hex(32)
    state["pending"] = PersistentMapping({**entry, "secret": secret})
    state.pop("queued_at", None)
    if state.get("status") != "subscribed":
        state["status"] = "pending"
    return secret


def record_error(source_id: str, *, error: str, now: float | None = None, portal=None) -> None:
    """A request could not be sent (hub down, no public URL ...): say why; retried later."""
    state = _state(source_id, portal=portal)
    state.update(
        {
            "last_error": error[:500],
            "error_at": time.time() if now is None else now,
            "failures": state.get("failures", 0) + 1,
        }
    )
    state.pop("pending", None)
    state.pop("queued_at", None)
    if state.get("status") != "subscribed":
        state["status"] = "failed"


def verify(
    source_id: str,
    *,
    mode: str,
    topic: str,
    lease_seconds: float | None = None,
    now: float | None = None,
    portal=None,
) -> bool:
    """The hub's verification of intent: True (and recorded) if we asked for this.

    A subscribe makes the pending request the active subscription, expiring after
    ``lease_seconds``; an unsubscribe ends it (and forgets a removed source's state).
    """
    now = time.time() if now is None else now
    state = get(source_id, portal=portal)
    if state is None:
        return False
    if mode == "unsubscribe":
        leaving = state.get("leaving")
        if not leaving or leaving["topic"] != topic:
            return False
        del state["leaving"]
        if (state.get("hub"), state.get("topic")) == (leaving["hub"], topic):
            for key in ("hub", "topic", "callback", "secret", "expires", "lease_seconds"):
                state.pop(key, None)
            state["status"] = "pending" if state.get("pending") else "unsubscribed"
        if not state.get("pending") and not state.get("hub"):
            forget(source_id, portal=portal)
        return True
    pending = state.get("pending")
    if mode != "subscribe" or not pending or pending["topic"] != topic:
        return False
    if lease_seconds is not None:
        lease_seconds = min(max(float(lease_seconds), 0.0), MAX_LEASE)
    state.update(
        {
            "status": "subscribed",
            "hub": pending["hub"],
            "topic": pending["topic"],
            "callback": pending["callback"],
            "secret": pending["secret"],
            "verified_at": now,
            "lease_seconds": lease_seconds,
            "expires": now + lease_seconds if lease_seconds else None,
            "failures": 0,
        }
    )
    for key in ("pending", "last_error", "error_at", "reason"):
        state.pop(key, None)
    return True


def deny(
    source_id: str, *, topic: str, reason: str = "", now: float | None = None, portal=None
) -> bool:
    """The hub refused (``hub.mode=denied``) a subscription we asked for: True if recorded."""
    state = get(source_id, portal=portal)
    if state is None:
        return False
    pending = state.get("pending")
    if not (pending and pending["topic"] == topic) and state.get("topic") != topic:
        return False
    state.pop("pending", None)
    state.update(
        {
            "status": "denied",
            "reason": reason[:500],
            "denied_at": time.time() if now is None else now,
            "expires": None,
        }
    )
    return True


def forget(source_id: str, *, portal=None) -> None:
    """Drop the state of ``source_id`` (nothing to unsubscribe from)."""
    states = _states(portal, create=False)
    if states is not None and source_id in states:
        del states[source_id]


def secrets_for(source_id: str, *, portal=None) -> list[str]:
    """The secrets the hub may sign notifications with: the active one, a pending one."""
    state = get(source_id, portal=portal)
    if state is None:
        return []
    found = [state.get("secret"), (state.get("pending") or {}).get("secret")]
    return [secret for secret in dict.fromkeys(found) if secret]


def active(source_id: str, *, portal=None) -> dict[str, str] | None:
    """``{"hub", "topic", "callback"}`` of what a hub may hold for us (to unsubscribe), or None."""
    state = get(source_id, portal=portal)
    if state is None:
        return None
    for entry in (state, state.get("pending") or {}):
        if entry.get("hub") and entry.get("topic"):
            return {key: entry[key] for key in ("hub", "topic", "callback")}
    return None


def info(source_id: str, *, portal=None) -> dict[str, Any] | None:
    """The subscription for people and JSON (times as ISO 8601 UTC; no secret), or None."""
    state = get(source_id, portal=portal)
    if state is None:
        return None
    pending = state.get("pending") or {}
    return {
        "status": state.get("status", "queued"),
        "hub": state.get("hub") or pending.get("hub") or "",
        "topic": state.get("topic") or pending.get("topic") or "",
        "expires": _iso(state.get("expires")),
        "verified": _iso(state.get("verified_at")),
        "renewing": bool(pending) and state.get("status") == "subscribed",
        "unsubscribing": bool(state.get("leaving")),
        "last_error": state.get("last_error") or "",
        "error_at": _iso(state.get("error_at")),
        "reason": state.get("reason") or "",
    }


def _iso(value: float | None) -> str | None:
    if not value:
        return None
    return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="seconds")


#: The longest wait (seconds) before a failed request is sent again.
MAX_RETRY_WAIT = 3600.0


def due(state, *, now: float, margin: float, retry_base: float) -> bool:
    """Whether a WebSub source with ``state`` needs a subscribe request now.

    Never asked (or the request was lost), a pending request the hub has not verified for
    :data:`PENDING_TIMEOUT`, a failed one ``retry_base * 2**(failures - 1)`` seconds (at
    most :data:`MAX_RETRY_WAIT`) after the error, a
    subscription with less than ``margin`` seconds left. A denial waits for a Manager (saving
    the source asks again).

    >>> due(None, now=0.0, margin=10.0, retry_base=30.0)
    True
    >>> due({"status": "subscribed", "expires": 100.0}, now=80.0, margin=10.0, retry_base=30.0)
    False
    """
    if state is None:
        return True
    status = state.get("status")
    if status == "denied":
        return False
    asked = max((state.get("pending") or {}).get("requested_at", 0.0), state.get("queued_at", 0.0))
    if asked and now - asked < PENDING_TIMEOUT:
        return False
    if state.get("failures"):
        wait = min(retry_base * 2 ** (state["failures"] - 1), MAX_RETRY_WAIT)
        if now < state.get("error_at", 0.0) + wait:
            return False
        if status == "failed":
            return True
    if status == "subscribed":
        expires = state.get("expires")
        return expires is not None and expires - now <= margin
    return True


def record_leaving_error(
    source_id: str, *, error: str, now: float | None = None, portal=None
) -> None:
    """An unsubscribe request could not be sent: the schedule sends it again later."""
    leaving = (get(source_id, portal=portal) or {}).get("leaving")
    if leaving is not None:
        leaving.update(
            {
                "last_error": error[:500],
                "error_at": time.time() if now is None else now,
                "failures": leaving.get("failures", 0) + 1,
            }
        )


def leaving_due(source_id: str, *, now: float, retry_base: float, portal=None) -> str:
    """What to do about an unsubscribe request: ``"send"`` it again, ``"forget"`` it (the
    lease ended anyway), or ``""`` (wait: it was sent, or fails and waits its turn)."""
    leaving = (get(source_id, portal=portal) or {}).get("leaving")
    if leaving is None:
        return ""
    if leaving.get("expires") and leaving["expires"] <= now:
        return "forget"
    if leaving.get("failures"):
        wait = min(retry_base * 2 ** (leaving["failures"] - 1), MAX_RETRY_WAIT)
        return "send" if now >= leaving.get("error_at", 0.0) + wait else ""
    return "send" if now - leaving.get("requested_at", now) >= PENDING_TIMEOUT else ""


def all_ids(*, portal=None) -> list[str]:
    """The ids of every source with a subscription state (removed sources' included)."""
    states = _states(portal, create=False)
    return list(states.keys()) if states is not None else []
