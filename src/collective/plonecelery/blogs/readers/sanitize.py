"""Make remote blog HTML safe to store in Plone, and turn HTML into plain text.

Usage::

    from collective.plonecelery.blogs.readers.sanitize import clean_html, html_to_text

    clean_html('<p onclick="x()">Hi<script>evil()</script></p>')   # '<p>Hi</p>'
    clean_html(html, iframe_hosts={"www.youtube.com"})            # keep https YouTube embeds only
    html_to_text("<p>Fish &amp; chips</p><p>today</p>")           # 'Fish & chips today'
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Collection

import nh3
from ada_url import URL

_TAGS = {
    *("p", "br", "hr", "div", "span", "a", "img", "picture", "source", "figure", "figcaption"),
    *("h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "kbd", "samp"),
    *(
        "b",
        "strong",
        "i",
        "em",
        "u",
        "s",
        "del",
        "ins",
        "mark",
        "small",
        "sub",
        "sup",
        "abbr",
        "cite",
        "q",
    ),
    *("ul", "ol", "li", "dl", "dt", "dd"),
    *("table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "colgroup", "col"),
    *("audio", "video", "track"),
}
_ATTRIBUTES = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height", "loading"},
    "source": {"src", "type", "media"},
    "audio": {"src", "controls"},
    "video": {"src", "controls", "width", "height", "poster"},
    "track": {"src", "kind", "srclang", "label"},
    "abbr": {"title"},
    "q": {"cite"},
    "blockquote": {"cite"},
    "ol": {"start", "type", "reversed"},
    "li": {"value"},
    "td": {"colspan", "rowspan", "headers"},
    "th": {"colspan", "rowspan", "headers", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "iframe": {"src", "width", "height", "title", "allowfullscreen", "frameborder"},
}
_URL_SCHEMES = {"http", "https", "mailto"}
# Embeds run third-party scripts in their own origin; sandbox them and send no referrer.
_IFRAME_SET = {
    "sandbox": "allow-scripts allow-same-origin allow-presentation allow-popups",
    "referrerpolicy": "no-referrer",
}
# nh3 keeps an <iframe> whose src it dropped; remove those leftovers (cosmetic: they load nothing).
_SRCLESS_IFRAME = re.compile(r"<iframe(?![^>]*\ssrc=)[^>]*>.*?</iframe>", re.DOTALL | re.IGNORECASE)
_BLOCK_START = re.compile(
    r"<(?=/?(?:p|div|br|hr|li|dt|dd|h[1-6]|tr|td|th|blockquote|pre|figure|figcaption|table|ul|ol)\b)",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")
#: URL attributes nh3 keeps without checking ``url_schemes`` (``<q cite="javascript:...">``).
_UNCHECKED_URL_ATTRIBUTES = {"cite"}
# Browsers drop tabs and newlines anywhere in a URL, and leading controls and spaces.
_URL_IGNORED = re.compile(r"[\t\n\r]|^[\x00-\x20]+")
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")


def clean_html(
    html: str, *, iframe_hosts: Collection[str] = (), base_url: str | None = None
) -> str:
    """Return ``html`` without scripts, styles, event handlers, unsafe URLs and foreign iframes.

    ``iframe_hosts`` lists the hosts whose ``https`` iframes are kept (e.g. ``www.youtube.com``);
    any other iframe is dropped with its content. Links get ``rel="noopener noreferrer"``.
    ``base_url`` (the post's URL on the blog) turns relative links and images into absolute ones,
    which would otherwise point into the Plone site.
    """
    if not html:
        return ""
    relative = ("rewrite_with_base", base_url) if base_url else None
    hosts = {host.lower() for host in iframe_hosts}
    if not hosts:
        return nh3.clean(
            html,
            tags=_TAGS,
            clean_content_tags={"script", "style", "iframe"},
            attributes={tag: attrs for tag, attrs in _ATTRIBUTES.items() if tag != "iframe"},
            attribute_filter=_check_urls,
            url_schemes=_URL_SCHEMES,
            url_relative=relative,
        )

    def keep_allowed_iframes(tag: str, attribute: str, value: str) -> str | None:
        if tag == "iframe" and attribute == "src":
            return iframe_src(value, hosts=hosts)
        return _check_urls(tag, attribute, value)

    cleaned = nh3.clean(
        html,
        tags=_TAGS | {"iframe"},
        clean_content_tags={"script", "style"},
        attributes=_ATTRIBUTES,
        attribute_filter=keep_allowed_iframes,
        set_tag_attribute_values={"iframe": _IFRAME_SET},
        url_schemes=_URL_SCHEMES,
        url_relative=relative,
    )
    return _SRCLESS_IFRAME.sub("", cleaned)


def _check_urls(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: drop a ``cite`` URL whose scheme is not allowed.

    >>> _check_urls("q", "cite", "java\tscript:alert(1)"), _check_urls("q", "cite", "/a:b")
    (None, '/a:b')
    """
    if attribute in _UNCHECKED_URL_ATTRIBUTES:
        scheme = _SCHEME.match(_URL_IGNORED.sub("", value))
        if scheme and scheme.group(1).lower() not in _URL_SCHEMES:
            return None
    return value


def iframe_src(value: str, *, hosts: Collection[str]) -> str | None:
    """The URL a browser would load for ``value`` if it is ``https`` on one of ``hosts``, else None.

    The URL is parsed by the WHATWG rules browsers follow (ada), not by ``urllib``: for
    ``https://evil.example\\@www.youtube.com/`` urllib sees www.youtube.com, browsers load
    evil.example. Credentials and explicit ports are refused. The result is the browser's own
    serialisation, so what is stored cannot be read another way.

    >>> iframe_src("https://www.youtube.com/embed/x", hosts={"www.youtube.com"})
    'https://www.youtube.com/embed/x'
    >>> iframe_src("https://evil.example\\@www.youtube.com/embed/x", hosts={"www.youtube.com"})
    """
    try:
        url = URL(value)
    except ValueError:
        return None
    if url.protocol != "https:" or url.username or url.password or url.port:
        return None
    if url.hostname not in {host.lower() for host in hosts}:
        return None
    return url.href


def html_to_text(html: str) -> str:
    """Return the text of ``html`` as one line: no tags, entities decoded, whitespace collapsed."""
    if not html:
        return ""
    # Block boundaries become spaces so '<p>a</p><p>b</p>' reads 'a b', not 'ab'.
    spaced = _BLOCK_START.sub(" <", html)
    text = html_lib.unescape(nh3.clean(spaced, tags=set()))
    return _SPACES.sub(" ", text).strip()
