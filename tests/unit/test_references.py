"""Task arguments: content by reference, persistent objects refused."""

import datetime

import pytest
from persistent import Persistent
from persistent.mapping import PersistentMapping

from collective.plonecelery import references


class Content:
    """Just enough of a content object: a UID attribute and a path."""

    def __init__(self, uid, path):
        setattr(self, "_plone.uuid", uid)
        self.path = path

    def getPhysicalPath(self):
        return tuple(self.path.split("/"))


class Brain:
    def __init__(self, obj):
        self.obj = obj

    def _unrestrictedGetObject(self):
        return self.obj


class Catalog:
    def __init__(self, *objects):
        self.by_uid = {getattr(o, "_plone.uuid"): o for o in objects}

    def unrestrictedSearchResults(self, UID):
        return [Brain(self.by_uid[UID])] if UID in self.by_uid else []


class Site:
    def __init__(self, *objects, paths=None):
        self.portal_catalog = Catalog(*objects)
        self.paths = paths or {}

    def unrestrictedTraverse(self, path, default=None):
        return self.paths.get(path, default)


def test_plain_json_values_pass_unchanged():
    args, kwargs = references.dump((1, "a", [1.5, None]), {"flag": True, "d": {"k": "v"}})
    assert args == [1, "a", [1.5, None]]
    assert kwargs == {"flag": True, "d": {"k": "v"}}


def test_content_travels_as_reference_and_resolves_by_uid():
    doc = Content("uid-1", "/plone/doc")
    args, kwargs = references.dump((doc,), {"items": [doc]})
    marker = {references.MARKER: {"uid": "uid-1", "path": "/plone/doc"}}
    assert args == [marker]
    assert kwargs == {"items": [marker]}
    loaded_args, loaded_kwargs = references.load(args, kwargs, site=Site(doc))
    assert loaded_args == [doc]
    assert loaded_kwargs == {"items": [doc]}


def test_falls_back_to_path_when_catalog_does_not_know_the_uid():
    doc = Content("uid-2", "/plone/doc")
    site = Site(paths={"/plone/doc": doc})
    args, _ = references.dump((doc,), {})
    assert references.load(args, {}, site=site)[0] == [doc]


def test_path_fallback_checks_the_uid():
    doc = Content("uid-3", "/plone/doc")
    other = Content("another-uid", "/plone/doc")
    site = Site(paths={"/plone/doc": other})
    args, _ = references.dump((doc,), {})
    with pytest.raises(references.UnresolvedReference, match="uid-3"):
        references.load(args, {}, site=site)


def test_unresolvable_reference_fails_clearly():
    args, _ = references.dump((Content("gone", "/plone/gone"),), {})
    with pytest.raises(references.UnresolvedReference, match="/plone/gone"):
        references.load(args, {}, site=Site())


def test_persistent_non_content_is_refused_at_queue_time():
    with pytest.raises(TypeError, match="persistent objects are not serialized"):
        references.dump((PersistentMapping(),), {})
    with pytest.raises(TypeError, match="Pass a content object"):
        references.dump((), {"obj": Persistent()})


def test_non_json_values_are_refused_at_queue_time():
    with pytest.raises(TypeError, match="JSON serializable"):
        references.dump((object(),), {})


def test_kombu_json_types_are_accepted():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    args, _ = references.dump((when,), {})
    assert args == [when]
