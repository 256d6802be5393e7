"""Task arguments: content objects travel as references, never as pickles.

At queue time :func:`dump` replaces every content object (anything with a UID)
by a small JSON reference and refuses other persistent objects. In the worker
:func:`load` turns the references back into objects of the task's site.
"""

from __future__ import annotations

from typing import Any

from Acquisition import aq_base
from kombu.utils.json import dumps
from persistent import Persistent

from .exceptions import UnresolvedReference

#: The key that marks a reference inside the JSON arguments.
MARKER = "__plonecelery_ref__"


def _uid_of(obj: Any) -> str | None:
    # The object's own attribute (as plone.uuid stores it), never one that
    # acquisition finds on a parent: a catalog inside the site is not the site.
    uid = getattr(aq_base(obj), "_plone.uuid", None)
    return uid if isinstance(uid, str) and uid else None


def reference(obj: Any) -> dict:
    """The JSON reference sent for a content object.

    >>> reference(portal["news"])  # doctest: +SKIP
    {'__plonecelery_ref__': {'uid': '5f3c...', 'path': '/Plone/news'}}
    """
    uid = _uid_of(obj)
    if uid is None:
        raise TypeError(f"{obj!r} has no UID: it cannot be sent as a reference.")
    return {MARKER: {"uid": uid, "path": "/".join(obj.getPhysicalPath())}}


def _dump_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return {key: _dump_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump_value(item) for item in value]
    if _uid_of(value) is not None and hasattr(value, "getPhysicalPath"):
        return reference(value)
    if isinstance(value, Persistent) or hasattr(value, "_p_jar"):
        raise TypeError(
            f"Cannot send {value!r} to a task: persistent objects are not "
            "serialized. Pass a content object (it travels by UID), its UID "
            "or path as a string, or the plain data the task needs."
        )
    return value


def dump(args: tuple | list, kwargs: dict) -> tuple[list, dict]:
    """Arguments ready for the JSON message; raises ``TypeError`` early.

    >>> dump((1, "a"), {"when": None})
    ([1, 'a'], {'when': None})
    """
    dumped_args = [_dump_value(value) for value in args]
    dumped_kwargs = {key: _dump_value(value) for key, value in kwargs.items()}
    try:
        # Fail in the caller's code, not after commit where nobody sees it.
        dumps([dumped_args, dumped_kwargs])
    except TypeError as exc:
        raise TypeError(f"Task arguments must be JSON serializable: {exc}") from exc
    return dumped_args, dumped_kwargs


def resolve(ref: dict, *, site: Any) -> Any:
    """The object a reference points to: by UID (unrestricted catalog), else by path."""
    uid, path = ref.get("uid"), ref.get("path")
    catalog = getattr(site, "portal_catalog", None)
    if uid and catalog is not None:
        brains = catalog.unrestrictedSearchResults(UID=uid)
        if brains:
            return brains[0]._unrestrictedGetObject()
    if path:
        obj = site.unrestrictedTraverse(path, None)
        if obj is not None and (uid is None or _uid_of(obj) == uid):
            return obj
    raise UnresolvedReference(f"Content with UID {uid!r} (last seen at {path!r}) no longer exists.")


def _load_value(value: Any, site: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and MARKER in value:
            return resolve(value[MARKER], site=site)
        return {key: _load_value(item, site) for key, item in value.items()}
    if isinstance(value, list):
        return [_load_value(item, site) for item in value]
    return value


def load(args: list | tuple, kwargs: dict, *, site: Any) -> tuple[list, dict]:
    """Arguments for the task function, with references resolved in ``site``."""
    return (
        [_load_value(value, site) for value in args],
        {key: _load_value(value, site) for key, value in kwargs.items()},
    )
