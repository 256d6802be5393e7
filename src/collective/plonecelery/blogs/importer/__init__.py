"""Fetch-and-import tasks for blog sources: the worker side of blog webhooks.

Usage (Plone side, after a webhook was verified, or from a management view)::

    from collective.plonecelery.blogs import importer

    importer.queue_import(config, remote_id="5c7ece47da174000c0c5c6d7", action="upsert",
                          delivery_id="msg_p5jXN8AQM9LWM0D4loKWxJek")
    importer.queue_backfill(config)            # every published post, one task per post
    importer.test_source.delay("blog")         # fetch one post from a worker, report the result

All are sent when the current transaction commits. In the worker :func:`import_post` runs as
the source's import user and never trusts the webhook body: it fetches the post from the
source's API and brings the one item keyed by (source id, remote id) in line with it:

* published on the blog -> created or updated (title, description, text, dates, subjects,
  creators, lead image, original URL; Volto blocks as ``config.volto_blocks`` says, see
  :mod:`.blocks`), then ``config.transition`` applied if needed;
* gone (404/410, not public any more, or a status other than published) -> retracted to
  ``private`` or deleted, per ``config.on_remove``;
* not newer than what was imported (``remote_modified``) -> skipped. Since the current state
  is always fetched, deliveries arriving twice or out of order end in the same item, and the
  webhook's action is only a hint: a 'remove' for a post the API still publishes keeps it.

Items are found through the ``plonecelery_remote_key`` catalog index (unrestricted, so that
retracted items are found too); the ``collective.plonecelery.remote_post`` behavior is enabled
on the source's content type by the first import.

Network errors, 5xx and 429 are retried (:data:`MAX_RETRIES` times, exponential backoff with
jitter from ``PLONECELERY_IMPORT_BACKOFF`` seconds, at least ``Retry-After``); other errors
fail at once with the API's message (:class:`ImportFailed`). Each outcome is written to the
delivery log (``blogs.deliveries``): imported, skipped, removed or failed.

A lead image that cannot be fetched (host not allowed for the source, not an image, network
trouble) does not fail the import: the item is imported without it and the delivery log says
why; the image is tried again when the post changes.
"""

from ...exceptions import ImportFailed  # noqa: F401
from .sync import Outcome  # noqa: F401
from .sync import find_item  # noqa: F401
from .sync import remove_post  # noqa: F401
from .sync import sync  # noqa: F401
from .sync import upsert_post  # noqa: F401
from .tasks import MAX_BACKOFF  # noqa: F401
from .tasks import MAX_RETRIES  # noqa: F401
from .tasks import backfill  # noqa: F401
from .tasks import backoff_seconds  # noqa: F401
from .tasks import import_post  # noqa: F401
from .tasks import queue_backfill  # noqa: F401
from .tasks import queue_import  # noqa: F401
from .tasks import test_source  # noqa: F401
from .users import IMPORT_USER  # noqa: F401
from .users import create_import_user  # noqa: F401
