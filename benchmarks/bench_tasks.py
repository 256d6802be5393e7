"""Zope-aware tasks the benchmark queues; the worker imports them via CELERY_IMPORTS.

Each one is as small as its kind allows, so that what is measured is the cost
of running a task inside Zope, not the task's own work.
"""

from __future__ import annotations

from plone import api

from collective.plonecelery import task


@task()
def noop():
    """Nothing but the Zope environment: connection, request, site, user, commit."""
    return "ok"


@task()
def read_title(uid):
    """A catalog query for one item (with the user's security filter)."""
    brains = api.content.find(UID=uid)
    return brains[0].Title


@task()
def write_counter(doc_id):
    """Increment an attribute of a document: one object written and committed."""
    doc = api.portal.get()[doc_id]
    doc.bench_counter = getattr(doc, "bench_counter", 0) + 1
    return doc.bench_counter


@task()
def sink():
    """Routed to a queue nobody consumes: for timing the queuing side only."""
    return "never runs"
