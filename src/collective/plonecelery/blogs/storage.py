"""Blog sources stored in the Plone site: add, read, change and remove them.

Usage::

    from collective.plonecelery.blogs import storage
    from collective.plonecelery.blogs.config import SourceConfig

    config = storage.config_from_data({"id": "blog", "title": "Blog", "kind": "ghost", ...})
    storage.add_source(config)                      # validates, grants the import user's roles
    storage.get_source("blog")                      # SourceConfig, secrets included
    storage.update_source("blog", {"title": "Our blog"})   # absent/empty secrets are kept
    storage.resolve_target(storage.get_source("blog"))    # the target folder
    storage.remove_source("blog")

Sources live in the site's annotations (``IAnnotations(portal)[ANNOTATION_KEY]``), an OOBTree of
source id -> ``PersistentMapping`` of ``SourceConfig.to_dict(include_secrets=True)``: plain
persistent types only, so the data survives the add-on being uninstalled. Secrets are stored (the
endpoint needs them to verify signatures) and leave only through :func:`get_source`; the REST
API and the control panel show ``to_dict()``, where they are ``{"set": true/false}``.

These functions do not check permissions: callers (REST services, control panel) require
``cmf.ManagePortal``. Those callers go through ``importer.websub.add_source`` (and
``update_source``, ``remove_source``), which call these and queue the WebSub requests.
"""

from __future__ import annotations

import re
from typing import Any

from Acquisition import aq_base
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from zope.annotation.interfaces import IAnnotations

from ..exceptions import UnknownSource
from . import deliveries
from .config import SECRET_FIELDS
from .config import SourceConfig

ANNOTATION_KEY = "collective.plonecelery.sources"
#: Local roles the import user gets on a source's target folder: add, edit, publish/retract.
IMPORT_ROLES = ("Contributor", "Editor", "Reviewer")
#: Fields a source has (what the REST API and forms accept).
FIELDS = tuple(SourceConfig.__dataclass_fields__)

_UID = re.compile(r"[0-9a-f]{32}")


def config_from_data(data: dict[str, Any]) -> SourceConfig:
    """Build a :class:`SourceConfig` from submitted data, refusing unknown fields.

    Raises ``ValueError`` (unknown or missing fields, wrong types); does not validate.

    ``config_from_data({"id": "b", ..., "colour": "red"})`` raises
    ``ValueError("unknown source field(s) 'colour'; valid fields: id, title, kind, ...")``.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a source must be a JSON object, not {type(data).__name__}")
    _refuse_unknown(data)
    return SourceConfig.from_dict(data)


def list_sources(*, portal=None) -> list[SourceConfig]:
    """All sources of the site, sorted by id (secrets included: do not show them)."""
    container = _container(portal, create=False)
    if container is None:
        return []
    return [SourceConfig.from_dict(dict(data)) for data in container.values()]


def get_source(source_id: str, *, portal=None) -> SourceConfig:
    """The source ``source_id``; raises :class:`UnknownSource`."""
    container = _container(portal, create=False)
    data = container.get(source_id) if container is not None and source_id else None
    if data is None:
        raise UnknownSource(source_id)
    return SourceConfig.from_dict(dict(data))


def add_source(config: SourceConfig, *, portal=None) -> SourceConfig:
    """Store a new source and grant its import user ``IMPORT_ROLES`` on the target folder.

    Raises ``ValueError`` when the configuration is invalid, the id is taken, the target folder
    or the import user does not exist.
    """
    portal = _portal(portal)
    config.validate()
    container = _container(portal, create=True)
    if config.id in container:
        raise ValueError(
            f"a source with id {config.id!r} exists already: change it with PATCH, "
            "or choose another id"
        )
    target = _check_placement(config, portal=portal)
    container[config.id] = PersistentMapping(config.to_dict(include_secrets=True))
    _grant(target, config.import_user)
    # The delivery log is created here, by a Manager, rather than by the first (concurrent,
    # anonymous) webhooks, which would all conflict on creating it.
    deliveries.ensure_log(portal=portal)
    return config


def update_source(source_id: str, changes: dict[str, Any], *, portal=None) -> SourceConfig:
    """Apply ``changes`` (field -> value) to a source and return the new configuration.

    Secrets that are absent, empty, ``None`` or the redacted ``{"set": ...}`` keep their value.
    The id cannot change. When the target folder or import user changes, the new one gets the
    import roles and the old one loses them (unless another source still needs them).
    """
    portal = _portal(portal)
    if not isinstance(changes, dict):
        raise ValueError(f"changes must be a JSON object, not {type(changes).__name__}")
    _refuse_unknown(changes)
    if "id" in changes and changes["id"] != source_id:
        raise ValueError(
            "the id of a source cannot change (it is in the webhook URL): "
            "add a new source and remove this one"
        )
    current = get_source(source_id, portal=portal)
    merged = current.to_dict(include_secrets=True)
    for name, value in changes.items():
        if name in SECRET_FIELDS and (value in (None, "") or isinstance(value, dict)):
            continue
        merged[name] = value
    config = SourceConfig.from_dict(merged)
    config.validate()
    target = _check_placement(config, portal=portal)
    container = _container(portal, create=True)
    container[source_id] = PersistentMapping(config.to_dict(include_secrets=True))
    _grant(target, config.import_user)
    if (current.import_user, current.target) != (config.import_user, config.target):
        _revoke_unless_needed(current, portal=portal)
    return config


def remove_source(source_id: str, *, portal=None) -> None:
    """Forget a source; its import user loses the import roles it no longer needs.

    Content already imported stays. Raises :class:`UnknownSource`.
    """
    portal = _portal(portal)
    config = get_source(source_id, portal=portal)
    del _container(portal, create=False)[source_id]
    _revoke_unless_needed(config, portal=portal)


def resolve_target(config: SourceConfig, *, portal=None):
    """The folder where ``config``'s posts go.

    ``config.target`` is a UID or a path relative to the site (``news``, ``/news/blog``; the
    site's own physical path as prefix is accepted too). Raises ``ValueError`` when nothing
    folderish is there. Works whatever the current user may see (the lookup is unrestricted).
    """
    from Products.CMFCore.interfaces import IFolderish

    portal = _portal(portal)
    target = (config.target or "").strip()
    if not target:
        raise ValueError(
            f"source {config.id!r} has no target: set it to the path of a folder "
            "(e.g. 'news') or its UID"
        )
    found = _by_uid(target, portal=portal) if _UID.fullmatch(target) else None
    if found is None:
        found = _by_path(target, portal=portal)
    if found is None or not IFolderish.providedBy(found):
        raise ValueError(
            f"the target {target!r} of source {config.id!r} is not a folder of the site: "
            "give the path of an existing folder (relative to the site) or its UID"
        )
    return found


def _portal(portal):
    if portal is not None:
        return portal
    from plone import api

    return api.portal.get()


def _container(portal, *, create: bool) -> OOBTree | None:
    annotations = IAnnotations(_portal(portal))
    container = annotations.get(ANNOTATION_KEY)
    if container is None and create:
        container = annotations[ANNOTATION_KEY] = OOBTree()
    return container


def _refuse_unknown(data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(
            f"unknown source field(s) {', '.join(map(repr, unknown))}; "
            f"valid fields: {', '.join(FIELDS)}"
        )


def _check_placement(config: SourceConfig, *, portal):
    target = resolve_target(config, portal=portal)
    if portal.acl_users.getUserById(config.import_user) is None:
        raise ValueError(
            f"the import user {config.import_user!r} does not exist: create that Plone user "
            "(it needs no global role) or name an existing one"
        )
    return target


def _by_uid(uid: str, *, portal):
    from plone.app.uuid.utils import uuidToPhysicalPath

    path = uuidToPhysicalPath(uid)
    return portal.unrestrictedTraverse(path, None) if path else None


def _by_path(target: str, *, portal):
    site_path = "/".join(portal.getPhysicalPath())
    path = "/" + target.strip("/")
    if path == site_path or path.startswith(site_path + "/"):
        path = path[len(site_path) :]
    relative = path.strip("/")
    if not relative:
        return None
    found = portal.unrestrictedTraverse(relative, None)
    # Traversal acquires: "news/news" would find /news. Only take what is really at the path.
    if found is None or "/".join(found.getPhysicalPath()) != f"{site_path}/{relative}":
        return None
    return found


def _grant(target, userid: str) -> None:
    current = set(target.get_local_roles_for_userid(userid))
    if not set(IMPORT_ROLES) <= current:
        target.manage_addLocalRoles(userid, list(IMPORT_ROLES))
        target.reindexObjectSecurity()


def _revoke_unless_needed(old: SourceConfig, *, portal) -> None:
    try:
        target = resolve_target(old, portal=portal)
    except ValueError:
        return  # the folder is gone, and its local roles with it
    for other in list_sources(portal=portal):
        if other.import_user != old.import_user:
            continue
        try:
            if aq_base(resolve_target(other, portal=portal)) is aq_base(target):
                return  # another source still imports there as this user
        except ValueError:
            continue
    roles = [
        role
        for role in target.get_local_roles_for_userid(old.import_user)
        if role not in IMPORT_ROLES
    ]
    if roles:
        target.manage_setLocalRoles(old.import_user, roles)
    else:
        target.manage_delLocalRoles([old.import_user])
    target.reindexObjectSecurity()


def webhook_urls(portal, source_id: str) -> dict[str, str]:
    """The URLs a blog platform posts to for ``source_id`` (with and without ``++api++``)."""
    base = portal.absolute_url()
    return {
        "api": f"{base}/++api++/@blog-webhook/{source_id}",
        "plain": f"{base}/@blog-webhook/{source_id}",
    }


# -- the state of a source that the worker keeps (not configuration) ---------------------------

#: Annotation key of the sources' state: source id -> ``PersistentMapping`` (``paused_until``,
#: ``pause_reason``). Apart from the configuration, so that the worker's writes never conflict
#: with a Manager's edits.
STATE_KEY = "collective.plonecelery.source-state"


def _state(source_id: str, *, portal) -> PersistentMapping:
    annotations = IAnnotations(_portal(portal))
    states = annotations.get(STATE_KEY)
    if states is None:
        states = annotations[STATE_KEY] = OOBTree()
    state = states.get(source_id)
    if state is None:
        state = states[source_id] = PersistentMapping()
    return state


def feed_validators(source_id: str, *, portal=None) -> dict[str, str]:
    """The ``ETag`` and ``Last-Modified`` of the feed's last read, for a conditional GET."""
    states = IAnnotations(_portal(portal)).get(STATE_KEY)
    state = states.get(source_id) if states is not None else None
    if state is None:
        return {}
    return {key: state[key] for key in ("etag", "last_modified") if state.get(key)}


def note_feed_read(
    source_id: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    not_modified: bool = False,
    portal=None,
) -> None:
    """Remember the validators of a feed just read, or count one more 304 (``not_modified``)."""
    state = _state(source_id, portal=portal)
    if not_modified:
        state["not_modified"] = state.get("not_modified", 0) + 1
        return
    state.update({"etag": etag or "", "last_modified": last_modified or ""})


def feed_counts(source_id: str, *, portal=None) -> dict[str, int]:
    """``{"not_modified": n}``: how many polls of the feed were answered 304."""
    states = IAnnotations(_portal(portal)).get(STATE_KEY)
    state = states.get(source_id) if states is not None else None
    return {"not_modified": state.get("not_modified", 0) if state is not None else 0}


def pause_source(source_id: str, *, until: float, reason: str, portal=None) -> None:
    """Stop fetching from ``source_id`` until ``until`` (Unix seconds), saying why.

    Imports queued meanwhile wait for the end of the pause instead of fetching (see
    ``importer.tasks``); the control panel and ``@blog-sources`` show the pause.
    """
    state = _state(source_id, portal=portal)
    if state.get("paused_until", 0) < until or state.get("pause_reason") != reason:
        state.update({"paused_until": until, "pause_reason": reason})


def source_pause(source_id: str, *, portal=None, now: float | None = None) -> dict | None:
    """``{"until": <Unix seconds>, "reason": ...}`` while ``source_id`` is paused, else None."""
    import time

    states = IAnnotations(_portal(portal)).get(STATE_KEY)
    state = states.get(source_id) if states is not None else None
    until = state.get("paused_until") if state is not None else None
    if not until or until <= (time.time() if now is None else now):
        return None
    return {"until": until, "reason": state.get("pause_reason") or ""}


def pause_info(source_id: str, *, portal=None) -> dict | None:
    """:func:`source_pause` for people: the end as ISO 8601 UTC (JSON-ready), or None."""
    from datetime import UTC
    from datetime import datetime

    pause = source_pause(source_id, portal=portal)
    if pause is None:
        return None
    until = datetime.fromtimestamp(pause["until"], tz=UTC).isoformat(timespec="seconds")
    return {"until": until, "reason": pause["reason"]}
