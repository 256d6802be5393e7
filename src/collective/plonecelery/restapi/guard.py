"""Keep unauthenticated webhook bodies away from everything before the signature check.

plone.restapi's JWT PAS plugin parses the body of *every* ``Content-Type: application/json``
POST while authenticating the request (to find ``login``/``password``), before any view runs.
For the anonymous webhook endpoint that means an attacker's unsigned body is parsed first: a
body nested 1,000 deep raised ``RecursionError`` (HTTP 500) there.

At publication start (before traversal and authentication) the content type of POSTs to
``@blog-webhook`` is set aside in the WSGI environment, so nothing recognises the body as JSON;
the endpoint itself reads the raw bytes, checks the signature and only then parses (with a
bounded depth, see :func:`collective.plonecelery.blogs.verify.events.check_depth`).
"""

from __future__ import annotations

#: Where the sender's original Content-Type is kept.
ORIGINAL_CONTENT_TYPE = "plonecelery.webhook.content_type"
_VIEW = "@blog-webhook"


def content_type(environ) -> str:
    """The Content-Type the sender sent (also after :func:`hide_webhook_body`)."""
    return environ.get(ORIGINAL_CONTENT_TYPE, environ.get("CONTENT_TYPE", ""))


def hide_webhook_body(event) -> None:
    """IPubStart subscriber: webhook POST bodies are opaque bytes until verified."""
    request = event.request
    environ = request.environ
    if environ.get("REQUEST_METHOD", "").upper() != "POST":
        return
    segments = environ.get("PATH_INFO", "").split("/")
    if _VIEW not in segments and f"@@{_VIEW}" not in segments:
        return
    if ORIGINAL_CONTENT_TYPE not in environ:
        environ[ORIGINAL_CONTENT_TYPE] = environ.get("CONTENT_TYPE", "")
    environ["CONTENT_TYPE"] = "application/octet-stream"
