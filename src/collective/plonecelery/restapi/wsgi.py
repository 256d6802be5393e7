"""A WSGI filter that answers 400 to a URL path that is not UTF-8, instead of Zope's 500.

ZPublisher decodes ``PATH_INFO`` as UTF-8 before anything else (``WSGIPublisher.publish_module``)
and lets the ``UnicodeDecodeError`` escape: ``POST /Plone/@blog-webhook/%C0%AE`` (or any URL with
such a byte) is an HTTP 500 and a traceback in the log, for any client. Nothing in Zope runs
before that decoding, so the refusal has to sit in front of it: add
``egg:collective.plonecelery#utf8paths`` as a ``[filter:utf8paths]`` of ``zope.ini`` and name it
in ``[pipeline:main]`` just before ``zope`` (docs/deployment.rst shows the whole pipeline).

The answer is JSON with ``type`` and ``message``, like the webhook endpoint's own errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

_BODY = json.dumps(
    {"type": "BadRequest", "message": "the URL path is not valid UTF-8 once percent-decoded"}
).encode("ascii")


def is_utf8_path(path: str) -> bool:
    """Can Zope decode this PEP 3333 ``PATH_INFO`` (latin-1 text of the raw bytes) as UTF-8?

    >>> is_utf8_path("/plone/@blog-webhook/caf\\xc3\\xa9"), is_utf8_path("/plone/\\xc0\\xae")
    (True, False)
    """
    try:
        path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


class UTF8Paths:
    """WSGI middleware: 400 JSON for a non-UTF-8 ``PATH_INFO``, everything else passes."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if isinstance(path, str) and not is_utf8_path(path):
            start_response(
                "400 Bad Request",
                [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))],
            )
            return [_BODY]
        return self.app(environ, start_response)


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Callable:
    """PasteDeploy entry point (``egg:collective.plonecelery#utf8paths``)."""
    return UTF8Paths
