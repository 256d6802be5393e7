"""The ``collective.plonecelery.remote_post`` behavior: where an imported item came from.

Usage::

    from collective.plonecelery.content.remote_post import IRemotePost, remote_key

    info = IRemotePost(item)          # the item itself (the behavior stores plain attributes)
    info.remote_source, info.remote_id, info.remote_url, info.remote_modified
    remote_key("blog", "42")          # 'blog:42', the value of the plonecelery_remote_key index
    enable_behavior("News Item")      # True if it was not enabled yet

The fields are read-only in forms: they are the key that maps a blog post to this item, and an
editor changing them would make the next import create a duplicate.
"""

from __future__ import annotations

from plone.autoform.interfaces import IFormFieldProvider
from plone.supermodel import model
from zope import schema
from zope.interface import provider

BEHAVIOR = "collective.plonecelery.remote_post"
#: Catalog index (and indexer) holding ``remote_key(remote_source, remote_id)``.
INDEX = "plonecelery_remote_key"


@provider(IFormFieldProvider)
class IRemotePost(model.Schema):
    """An item imported from a blog source; keyed by (source, remote id)."""

    model.fieldset(
        "remote_post",
        label="Imported post",
        fields=["remote_source", "remote_id", "remote_url", "remote_modified"],
    )

    remote_source = schema.TextLine(
        title="Source",
        description="Id of the blog source this item is imported from.",
        required=False,
        readonly=True,
    )
    remote_id = schema.TextLine(
        title="Remote id",
        description="The post's id on the blog platform.",
        required=False,
        readonly=True,
    )
    remote_url = schema.URI(
        title="Original URL",
        description="Where the post is published on the blog.",
        required=False,
        readonly=True,
    )
    remote_modified = schema.Datetime(
        title="Modified on the blog",
        description="Last modification on the blog when it was imported; older updates are "
        "skipped.",
        required=False,
        readonly=True,
    )


def remote_key(source_id: str, remote_id: str) -> str:
    """The catalog key of a post: ``'<source id>:<remote id>'``.

    >>> remote_key("blog", "5c7ece47da174000c0c5c6d7")
    'blog:5c7ece47da174000c0c5c6d7'
    """
    if not source_id or not remote_id:
        raise ValueError("remote_key needs both a source id and a remote id")
    return f"{source_id}:{remote_id}"


def enable_behavior(portal_type: str) -> bool:
    """Add the remote-post behavior to the Dexterity type ``portal_type``; False if already on.

    Runs in the current site. Plain Python, no permission check: call it from trusted code
    (the import task, an install step, the source management service).
    """
    from plone.dexterity.interfaces import IDexterityFTI
    from zope.component import queryUtility

    fti = queryUtility(IDexterityFTI, name=portal_type)
    if fti is None:
        raise ValueError(
            f"{portal_type!r} is not a Dexterity content type of this site: "
            "set the source's portal_type to one, e.g. 'News Item'"
        )
    behaviors = tuple(fti.behaviors)
    if BEHAVIOR in behaviors:
        return False
    # manage_changeProperties fires the FTI modification event that refreshes cached schemas.
    fti.manage_changeProperties(behaviors=(*behaviors, BEHAVIOR))
    # Items of this type imported before an uninstall provide the behavior again: index
    # them, so that their posts' next imports find them instead of making second items.
    from plone import api

    from .indexers import INDEX

    for brain in api.content.find(portal_type=portal_type, unrestricted=True):
        obj = brain._unrestrictedGetObject()
        if getattr(obj, "remote_id", None):
            obj.reindexObject(idxs=[INDEX])
    return True
