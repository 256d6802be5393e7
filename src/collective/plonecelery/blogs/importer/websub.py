"""WebSub: the add-on subscribes feed sources to their hub, renews and ends the subscriptions.

Only workers talk to the Internet, so every request to a hub is a worker task, queued
through the outbox (sent only if the transaction that asks commits):

* a source with ``websub`` on is added or saved -> :func:`subscribe` (worker): find the hub
  (``hub_url``, else the feed's ``rel="hub"`` link: HTTP ``Link`` header, Atom/RSS
  ``<link rel="hub">``, JSON Feed ``hubs``) and the topic (``hub_url`` set: the feed URL;
  else the feed's ``rel="self"`` link, or its URL), record the request with a fresh random
  secret (``blogs/subscriptions.py``) and queue :func:`send_request`, which POSTs
  ``hub.mode=subscribe`` to the hub. The hub then verifies our intent by GETting the
  callback (``restapi/webhook.py``): only a request recorded here is confirmed, and the
  lease it grants (``hub.lease_seconds``) gives the expiry.
* the blog schedule (``importer/schedule.py``: a worker bootstep, the project's "beat")
  asks again for a subscription with less than :func:`renewal_margin` left, a request that
  failed (hub down: retried at the next run, then after a wait that doubles) or
  that the hub did not verify in ``subscriptions.PENDING_TIMEOUT``.
* the source is removed, or ``websub`` turned off -> :func:`send_request` with
  ``hub.mode=unsubscribe``; hub, topic and callback travel in the task's arguments (the
  configuration is gone by then), the request is recorded for the hub's verification.

The callback is ``PLONECELERY_PUBLIC_URL`` + ``/@blog-webhook/<source id>``.

Usage (Plone side: the REST API and the control panel change sources through these)::

    from collective.plonecelery.blogs.importer import websub

    websub.add_source(config)
    websub.update_source("blog", {"websub": False})   # queues the unsubscribe
    websub.remove_source("blog")
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ...config import addon_settings
from ...exceptions import ConfigurationError
from ...exceptions import FetchError
from ...exceptions import UnknownSource
from ...task import task
from .. import storage
from .. import subscriptions
from ..readers.feed import discover_hub
from ..readers.http import post_form
from .tasks import TASK_NAMES

logger = logging.getLogger(__name__)

#: The longest renewal margin (seconds): a ten-day lease is renewed a day before its end.
MAX_MARGIN = 86400.0


def callback_url(source_id: str, *, site_id: str, public_url: str | None = None) -> str:
    """The URL a hub calls back for ``source_id``: ``<public URL>/@blog-webhook/<id>``.

    ``{site}`` in the public URL stands for the site's id. Raises ``ConfigurationError``
    when ``PLONECELERY_PUBLIC_URL`` is not set.

    >>> callback_url("blog", site_id="plone", public_url="https://www.example.org/")
    'https://www.example.org/@blog-webhook/blog'
    """
    base = addon_settings().public_url if public_url is None else public_url
    if not base:
        raise ConfigurationError(
            "PLONECELERY_PUBLIC_URL is not set: a WebSub hub needs the site's public URL "
            "(as the Internet reaches it, e.g. https://www.example.org) to call back; set it "
            "for the workers"
        )
    return f"{base.replace('{site}', site_id).rstrip('/')}/@blog-webhook/{source_id}"


def renewal_margin(lease_seconds: float | None, *, interval: float) -> float:
    """How long before the end of a lease it is renewed: half of it, at most a day, and at
    least three schedule intervals (a run must see it in time, and the renewal takes a few
    task hops: schedule run, subscribe, request, the hub's verification).

    >>> renewal_margin(864000, interval=60)
    86400.0
    >>> renewal_margin(15, interval=5)
    15.0
    """
    half = min((lease_seconds or 0) / 2, MAX_MARGIN)
    return float(max(half, 3 * interval))


# -- Plone side ----------------------------------------------------------------------------


def add_source(config, *, portal=None):
    """:func:`storage.add_source`, then queue the subscription if ``websub`` is on."""
    storage.add_source(config, portal=portal)
    if config.websub:
        queue_subscribe(config.id, portal=portal)
    return config


def update_source(source_id: str, changes: dict[str, Any], *, portal=None):
    """:func:`storage.update_source`, then subscribe, resubscribe or unsubscribe as needed.

    Saving a WebSub source whose hub refused or failed asks again.
    """
    old = storage.get_source(source_id, portal=portal)
    new = storage.update_source(source_id, changes, portal=portal)
    moved = (old.api_url, old.hub_url) != (new.api_url, new.hub_url)
    if old.websub and (not new.websub or moved):
        queue_unsubscribe(source_id, allow_private=old.allow_private, portal=portal)
    state = subscriptions.get(source_id, portal=portal)
    again = state is None or state.get("status") in ("denied", "failed", "unsubscribed")
    if new.websub and (not old.websub or moved or again):
        queue_subscribe(source_id, portal=portal)
    return new


def remove_source(source_id: str, *, portal=None) -> None:
    """:func:`storage.remove_source`, then queue the unsubscribe of its subscription."""
    old = storage.get_source(source_id, portal=portal)
    storage.remove_source(source_id, portal=portal)
    queue_unsubscribe(source_id, allow_private=old.allow_private, portal=portal)


def queue_subscribe(source_id: str, *, portal=None) -> None:
    """Queue :func:`subscribe` (sent when the transaction commits)."""
    subscriptions.note_queued(source_id, portal=portal)
    subscribe.delay(source_id)


def queue_unsubscribe(source_id: str, *, allow_private: bool, portal=None) -> None:
    """Record and queue the unsubscribe of what a hub may hold for ``source_id`` (if any)."""
    entry = subscriptions.active(source_id, portal=portal)
    if entry is None:
        subscriptions.forget(source_id, portal=portal)
        return
    subscriptions.request(
        source_id, mode="unsubscribe", allow_private=allow_private, portal=portal, **entry
    )
    state = subscriptions.get(source_id, portal=portal)
    state.pop("pending", None)  # a subscribe not verified yet is not wanted any more
    send_request.delay(source_id, "unsubscribe", allow_private=allow_private, **entry)


# -- the schedule (worker side, in the blog schedule's run) ---------------------------------


def queue_due(portal, configs, *, now: float) -> list[str]:
    """Queue the subscribe requests and unsubscribe retries that are due; their source ids."""
    settings = addon_settings()
    queued = []
    for config in configs:
        if not config.websub:
            continue
        state = subscriptions.get(config.id, portal=portal)
        lease = state.get("lease_seconds") if state is not None else None
        margin = renewal_margin(lease, interval=settings.blog_schedule_interval)
        # A failed request waits one schedule interval, then two, four ... (at most an hour).
        retry_base = settings.blog_schedule_interval
        if subscriptions.due(state, now=now, margin=margin, retry_base=retry_base):
            queue_subscribe(config.id, portal=portal)
            queued.append(config.id)
    for source_id in subscriptions.all_ids(portal=portal):
        what = subscriptions.leaving_due(
            source_id, now=now, retry_base=settings.blog_schedule_interval, portal=portal
        )
        if what == "forget":
            state = subscriptions.get(source_id, portal=portal)
            del state["leaving"]
            if not state.get("hub") and not state.get("pending"):
                subscriptions.forget(source_id, portal=portal)
        elif what == "send":
            leaving = subscriptions.get(source_id, portal=portal)["leaving"]
            # Counted as sent now: the next run waits for this one's outcome.
            leaving["requested_at"] = now
            if leaving.get("failures"):
                leaving["error_at"] = now
            send_request.delay(
                source_id,
                "unsubscribe",
                hub=leaving["hub"],
                topic=leaving["topic"],
                callback=leaving["callback"],
                allow_private=leaving.get("allow_private", False),
            )
            queued.append(source_id)
    return queued


# -- tasks (worker side) ---------------------------------------------------------------------


@task.as_admin(name=TASK_NAMES + "websub_subscribe")
def subscribe(source_id: str) -> dict[str, Any]:
    """Find the source's hub and topic, record a subscribe request, queue :func:`send_request`."""
    from zope.component.hooks import getSite

    try:
        config = storage.get_source(source_id)
    except UnknownSource:
        return {"status": "gone"}
    if not config.websub:
        return {"status": "off"}
    try:
        callback = callback_url(source_id, site_id=getSite().getId())
        hub, topic = find_hub(config)
    except (ConfigurationError, FetchError) as exc:
        return _failed(source_id, f"cannot subscribe: {exc}")
    subscriptions.request(
        source_id,
        mode="subscribe",
        hub=hub,
        topic=topic,
        callback=callback,
        allow_private=config.allow_private,
    )
    send_request.delay(
        source_id,
        "subscribe",
        hub=hub,
        topic=topic,
        callback=callback,
        allow_private=config.allow_private,
    )
    return {"status": "requested", "hub": hub, "topic": topic}


def find_hub(config) -> tuple[str, str]:
    """``(hub, topic)`` of a WebSub source; ``FetchError`` when the feed names no hub."""
    if config.hub_url:
        return config.hub_url, config.api_url
    links = discover_hub(config.api_url, allow_private=config.allow_private)
    if not links.hub:
        raise FetchError(
            f'the feed {config.api_url} announces no WebSub hub (no rel="hub" link): '
            "set the source's hub URL",
            retryable=False,
        )
    return links.hub, links.self_url or config.api_url


@task.as_admin(name=TASK_NAMES + "websub_send")
def send_request(
    source_id: str,
    mode: str,
    *,
    hub: str,
    topic: str,
    callback: str,
    allow_private: bool = False,
) -> dict[str, Any]:
    """POST ``hub.mode=<mode>`` to the hub (the request was recorded when this was queued).

    A subscribe that was superseded (another request recorded since) is not sent. An error
    is recorded; the blog schedule sends the request again later.
    """
    state = subscriptions.get(source_id) or {}
    entry = state.get("pending" if mode == "subscribe" else "leaving")
    if not entry or (entry["hub"], entry["topic"], entry["callback"]) != (hub, topic, callback):
        return {"status": "superseded"}
    data = {"hub.mode": mode, "hub.topic": topic, "hub.callback": callback}
    if mode == "subscribe":
        data["hub.secret"] = entry["secret"]
    try:
        response = post_form(
            hub, data=data, allow_private=allow_private, hidden=(data.get("hub.secret", ""),)
        )
    except FetchError as exc:
        if mode == "unsubscribe":
            subscriptions.record_leaving_error(source_id, error=str(exc))
            logger.warning("WebSub unsubscribe of %r at %s failed: %s", source_id, hub, exc)
            return {"status": "failed", "error": str(exc)}
        return _failed(source_id, f"the hub refused or could not be reached: {exc}")
    if mode == "unsubscribe":
        # Sent: from now on, only a missing verification makes it due again.
        for key in ("failures", "error_at", "last_error"):
            entry.pop(key, None)
    logger.info(
        "WebSub %s request for %r sent to %s (HTTP %s); waiting for its verification",
        mode,
        source_id,
        hub,
        response.status_code,
    )
    return {"status": "sent", "mode": mode, "http_status": response.status_code}


def _failed(source_id: str, error: str) -> dict[str, Any]:
    subscriptions.record_error(source_id, error=error, now=time.time())
    logger.warning("WebSub subscription of %r: %s", source_id, error)
    return {"status": "failed", "error": error}
