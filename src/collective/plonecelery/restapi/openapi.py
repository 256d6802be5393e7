"""``@plonecelery-openapi``: the OpenAPI description of the add-on's endpoints.

::

    GET {site}/++api++/@plonecelery-openapi     (also {site}/@plonecelery-openapi)

Anonymous, and the bytes of ``openapi.yaml`` beside this module as they are (``application/
yaml``): what the documentation shows and the tests check is what clients get. A plain view,
not a plone.rest service, so that the answer is the file and not a JSON rendering of it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from Products.Five.browser import BrowserView

#: The document, shipped in the package (docs/api.rst includes the same file).
DOCUMENT = Path(__file__).with_name("openapi.yaml")
CONTENT_TYPE = "application/yaml; charset=utf-8"


@cache
def document() -> bytes:
    """The OpenAPI document's bytes (read once per process)."""
    return DOCUMENT.read_bytes()


class OpenAPIDocument(BrowserView):
    """Serve ``openapi.yaml``."""

    def __call__(self):
        response = self.request.response
        response.setHeader("Content-Type", CONTENT_TYPE)
        response.setHeader("X-Content-Type-Options", "nosniff")
        return document()
