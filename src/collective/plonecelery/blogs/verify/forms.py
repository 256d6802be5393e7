"""Form-encoded webhook bodies in PHP's bracket notation, as WordPress plugins send them.

Usage::

    from collective.plonecelery.blogs.verify.forms import parse_php_form

    parse_php_form(b"post_id=4&post%5BID%5D=4&post%5Bpost_type%5D=post")
    # {'post_id': '4', 'post': {'ID': '4', 'post_type': 'post'}}

WP Webhooks sends its payload as JSON or, when the trigger is set to form data, as
``http_build_query()`` of the same array: ``post[ID]=1&taxonomies[category][news][name]=News``.
Values stay strings (PHP does not type them either). ``a[]=x&a[]=y`` gives a list.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

#: Bounds: a signed body is trusted, but a parser never recurses or grows without limit.
MAX_FIELDS = 5000
MAX_DEPTH = 8

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """The body is not a form in PHP's notation."""


def parse_php_form(body: bytes) -> dict[str, Any]:
    """Parse ``body`` (``application/x-www-form-urlencoded``) into nested dicts and lists.

    >>> parse_php_form(b"a=1&b[c]=2&b[d][]=3&b[d][]=4")
    {'a': '1', 'b': {'c': '2', 'd': ['3', '4']}}

    :raises FormError: not UTF-8, too many fields, too deep, or a key PHP would not read.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("the form body is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise FormError(f"the body is not form-encoded: {exc}") from None
    if len(pairs) > MAX_FIELDS:
        raise FormError(f"the form has more than {MAX_FIELDS} fields")
    result: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise FormError(f"form field name {key[:60]!r} is not name[part]... notation")
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_DEPTH:
            raise FormError(f"form field {key[:60]!r} is nested deeper than {MAX_DEPTH}")
        _put(result, path, value)
    return result


def _put(container: dict[str, Any], path: list[str], value: str) -> None:
    node: Any = container
    for position, part in enumerate(path):
        last = position == len(path) - 1
        child_kind = list if not last and path[position + 1] == "" else dict
        if isinstance(node, list):
            if part != "":
                raise FormError("a form list ('[]') cannot also have named parts")
            if last:
                node.append(value)
                return
            node.append(child_kind())
            node = node[-1]
            continue
        if part == "":
            raise FormError("'[]' must follow a named part")
        if last:
            node[part] = value
            return
        existing = node.get(part)
        if not isinstance(existing, (dict, list)):
            existing = node[part] = child_kind()
        node = existing
