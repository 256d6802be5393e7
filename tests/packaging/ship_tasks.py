"""A task module written against collective.celery's documented API.

Only the import line differs from collective.celery's README::

    from collective.celery import task          # collective.celery
    from collective.plonecelery import task     # here

The packaging tests queue these tasks through the installed package (pip and
buildout installs) and watch a real worker run them.
"""

from plone import api

from collective.plonecelery import task


@task()
def create_document(context, doc_id, title="Made by a worker"):
    """As the user who queued it: adds a page to ``context``."""
    context.invokeFactory("Document", doc_id, title=title)
    return {"path": "/".join(context[doc_id].getPhysicalPath()), "user": current_user()}


@task.as_admin()
def retitle_as_admin(context, doc_id, title):
    """As an admin (collective.celery's ``@task.as_admin()``)."""
    document = context[doc_id]
    document.setTitle(title)
    document.reindexObject(idxs=["Title"])
    return {"title": document.Title(), "user": current_user()}


def current_user():
    return api.user.get_current().getId()
