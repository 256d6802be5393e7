"""Catalog indexer ``plonecelery_remote_key`` for items with the remote-post behavior.

Usage::

    catalog.unrestrictedSearchResults(plonecelery_remote_key=remote_key("blog", "42"))
    reindex_remote_keys(portal)   # after (re)adding the index to a site with imported items
"""

from __future__ import annotations

from plone.indexer import indexer

from collective.plonecelery.content.remote_post import INDEX
from collective.plonecelery.content.remote_post import IRemotePost
from collective.plonecelery.content.remote_post import remote_key


@indexer(IRemotePost)
def plonecelery_remote_key(obj):
    """``'<source>:<remote id>'``; items not (yet) imported are left out of the index."""
    source = getattr(obj, "remote_source", None)
    remote_id = getattr(obj, "remote_id", None)
    if not source or not remote_id:
        # AttributeError tells the catalog "no value": the item is not indexed under a key.
        raise AttributeError(INDEX)
    return remote_key(source, remote_id)


def reindex_remote_keys(portal) -> None:
    """Fill the ``plonecelery_remote_key`` index from the content (upgrade steps, reinstall).

    GenericSetup adds indexes empty; without this, items imported before the index existed
    would not be found and the next import of their posts would create duplicates.
    """
    portal.portal_catalog.manage_reindexIndex(ids=[INDEX])
