"""Sphinx configuration of the collective.plonecelery documentation.

Build with ``make docs`` (or ``sphinx-build -b html docs docs/_build/html``).
"""

from __future__ import annotations

project = "collective.plonecelery"
author = "collective.plonecelery contributors"
copyright = "collective.plonecelery contributors"  # noqa: A001 (Sphinx setting name)
release = "1.0.0a1.dev0"
version = "1.0"

extensions: list[str] = []

root_doc = "index"
exclude_patterns = ["_build"]
language = "en"
# "default": Python, falling back to plain text (without a warning) for shell lines.
highlight_language = "default"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = "collective.plonecelery"
html_theme_options = {
    "description": "Celery tasks inside Plone: a transactional outbox and blog webhooks",
    "fixed_sidebar": True,
}

# Every page links here; keep external links stable and checkable with `-b linkcheck`.
linkcheck_ignore = [r"http://localhost.*", r"http://127\.0\.0\.1.*"]
