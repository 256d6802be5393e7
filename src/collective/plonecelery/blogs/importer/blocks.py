"""Volto blocks of an imported post: its sanitised HTML as slate, image, video and html blocks.

Volto shows a News Item's ``blocks``, not its ``text``. For a site with plone.volto, the
importer writes both: ``text`` for Classic UI, and the blocks below (a title block first)::

    from collective.plonecelery.blogs.importer.blocks import volto_blocks

    volto_blocks('<p>Hi <a href="https://example.org">there</a></p>', seed="blog:42")
    # {"blocks": {"<id 0>": {"@type": "title"},
    #             "<id 1>": {"@type": "slate", "plaintext": "Hi there", "value": [
    #                 {"type": "p", "children": [{"text": "Hi "}, {"type": "link",
    #                  "data": {"url": "https://example.org"},
    #                  "children": [{"text": "there"}]}]}]}},
    #  "blocks_layout": {"items": ["<id 0>", "<id 1>"]}}

The input is what ``readers.sanitize.clean_html`` leaves (a closed set of tags, absolute URLs,
iframes only from the source's ``iframe_hosts``), so only those tags are handled:

* ``p``, ``h1``-``h6``, ``ul``/``ol``, ``blockquote``, ``figcaption``: one slate block each
  (``h1`` becomes ``h2``: the title block is the page's heading); inline ``a``, ``strong``,
  ``em``, ``u``, ``s``, ``sub``, ``sup``, ``code`` and ``br`` become slate links, marks and
  line breaks; other inline tags keep only their text;
* ``img``: an image block, also from inside a paragraph or a link (the paragraph is split
  around it, so the order of text and images is kept);
* ``iframe`` from YouTube or Vimeo and ``video``: a video block (Volto's own player);
  ``table``, ``pre``, ``dl``, ``audio`` and other iframes: an html block with their (sanitised)
  markup; ``div``, ``figure`` and ``picture`` are unwrapped; ``hr`` is dropped.

Block ids are derived from ``seed`` (the item's remote key) and the block's position, so a
re-import writes the same ids in the same order and replaces the blocks instead of appending.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

#: The profile whose installation makes ``auto`` write blocks.
VOLTO_PROFILE = "plone.volto:default"
#: The behavior that gives a type its ``blocks`` and ``blocks_layout`` fields (plone.restapi).
BLOCKS_BEHAVIOR = "volto.blocks"

#: Elements nested deeper than this keep only their text: odd or hostile HTML (hundreds of
#: nested spans) must not exhaust Python's recursion limit and fail the import.
MAX_DEPTH = 48

_NAMESPACE = uuid.UUID("6f0c3c2e-6d1b-5b8e-9a53-0c6a1f4e2d7b")
_TEXT_BLOCKS = {"p": "p", "figcaption": "p", **{f"h{n}": f"h{n}" for n in range(2, 7)}, "h1": "h2"}
_LISTS = {"ul", "ol"}
_MARKS = {
    **{"strong": "strong", "b": "strong", "em": "em", "i": "em", "u": "u"},
    **{"s": "s", "del": "s", "sub": "sub", "sup": "sup", "code": "code", "kbd": "code"},
}
_UNWRAPPED = {"div", "figure", "picture", "section", "article", "body"}
_AS_HTML = {"table", "pre", "dl", "audio"}
_DROPPED = {"", "hr", "source", "track", "colgroup", "col", "script", "style"}
_MEDIA = {"img", "iframe", "video"}
_SPACES = re.compile(r"\s+")
_YOUTUBE_HOSTS = {"www.youtube.com", "youtube.com", "www.youtube-nocookie.com", "youtu.be"}
_VIMEO_HOSTS = {"player.vimeo.com", "vimeo.com", "www.vimeo.com"}

Block = dict[str, Any]
Node = dict[str, Any]


def write_blocks(item, *, html: str, seed: str, mode: str, fields: set[str]) -> str | None:
    """Replace the blocks of ``item`` by those of ``html``, as ``mode`` says.

    The blocks are replaced as a whole, so a re-import never appends.

    :param item: [required] The content item being imported (created or updated).
    :param html: [required] The post's sanitised HTML (``RemotePost.html``).
    :param seed: [required] What the block ids derive from: the item's remote key.
    :param mode: [required] The source's ``volto_blocks``: ``off`` leaves the blocks alone,
        ``auto`` writes them when the type has the blocks fields and plone.volto is
        installed, ``on`` whenever the type has them.
    :param fields: [required] The field names of the item's type (schema and behaviors).
    :returns: A note for the delivery log (``on`` for a type without blocks), else None.
    """
    if mode == "off":
        return None
    if not {"blocks", "blocks_layout"} <= fields:
        if mode == "on":
            return (
                f"imported without Volto blocks: {item.portal_type} lacks the "
                f"{BLOCKS_BEHAVIOR} behavior"
            )
        return None
    if mode == "auto" and not volto_installed():
        return None
    data = volto_blocks(html, seed=seed)
    item.blocks = data["blocks"]
    item.blocks_layout = data["blocks_layout"]
    logger.debug("%s: %d Volto blocks", seed, len(data["blocks"]))
    return None


def volto_installed() -> bool:
    """Tell whether the current site has plone.volto's profile installed (a Volto site).

    :returns: True if ``plone.volto:default`` is installed in the current site.
    """
    from plone import api

    setup = api.portal.get_tool("portal_setup")
    return setup.getLastVersionForProfile(VOLTO_PROFILE) not in ("unknown", None)


def volto_blocks(html: str, *, seed: str) -> dict[str, Any]:
    """Convert ``html`` into the ``blocks`` and ``blocks_layout`` of a Volto page.

    A title block comes first, then the blocks of :func:`html_to_blocks`.

    :param html: [required] Sanitised HTML (what ``readers.sanitize.clean_html`` returns).
    :param seed: [required] What the ids derive from (:func:`block_ids`): the same seed
        gives the same ids.
    :returns: ``{"blocks": {id: block}, "blocks_layout": {"items": [id, ...]}}``.

    >>> [block["@type"] for block in volto_blocks("<p>Hi</p>", seed="blog:1")["blocks"].values()]
    ['title', 'slate']
    """
    blocks = [{"@type": "title"}, *html_to_blocks(html)]
    ids = block_ids(seed, len(blocks))
    return {"blocks": dict(zip(ids, blocks, strict=True)), "blocks_layout": {"items": ids}}


def block_ids(seed: str, count: int) -> list[str]:
    """Make ``count`` block ids, the same for the same ``seed``.

    :param seed: [required] Any string; the item's remote key for imported posts.
    :param count: [required] How many ids.
    :returns: A list of UUID strings (the form of Volto's own block ids).
    """
    return [str(uuid.uuid5(_NAMESPACE, f"{seed}#{index}")) for index in range(count)]


def html_to_blocks(html: str) -> list[Block]:
    """Convert sanitised ``html`` into Volto blocks, in document order (no title block).

    :param html: [required] Sanitised HTML (what ``readers.sanitize.clean_html`` returns).
    :returns: A list of blocks (slate, image, video, html).

    >>> html_to_blocks("<h2>News</h2>")[0]["value"]
    [{'type': 'h2', 'children': [{'text': 'News'}]}]
    """
    if not html or not html.strip():
        return []
    from lxml import html as lxml_html

    # huge_tree: libxml2 would otherwise drop what is nested deeper than 255 (MAX_DEPTH
    # bounds the walk instead).
    parser = lxml_html.HTMLParser(huge_tree=True)
    root = lxml_html.fragment_fromstring(html, create_parent="div", parser=parser)
    return _Converter().container(root)


class _Converter:
    """Walks the tree once; inline content is collected until a block-level element ends it."""

    def __init__(self):
        self.depth = 0

    def container(self, element) -> list[Block]:
        if self.depth >= MAX_DEPTH:
            return text_blocks("p", _text(element.text_content()))
        self.depth += 1
        try:
            return self._container(element)
        finally:
            self.depth -= 1

    def _container(self, element) -> list[Block]:
        blocks: list[Block] = []
        pending: list[Node | Block] = _text(element.text)
        for child in element:
            tag = _tag(child)
            if tag in _DROPPED:
                pass
            elif _is_block_level(tag):
                blocks += text_blocks("p", pending)
                pending = []
                blocks += self.block(child, tag)
            else:
                pending += self.inline(child, tag)
            pending += _text(child.tail)
        return blocks + text_blocks("p", pending)

    def block(self, element, tag: str) -> list[Block]:
        if tag in _TEXT_BLOCKS:
            return text_blocks(_TEXT_BLOCKS[tag], self.contents(element))
        if tag in _LISTS:
            items, media = self.list_items(element)
            return [*text_blocks(tag, items), *media]
        if tag == "blockquote":
            return text_blocks("blockquote", self.quoted(element))
        if tag in _UNWRAPPED:
            return self.container(element)
        if tag in _AS_HTML:
            return [html_block(element)]
        return media_blocks(element, tag)

    def contents(self, element) -> list[Node | Block]:
        """The inline content of ``element``: slate nodes, and the blocks found among them."""
        return self.flow(element, lambda items, child, tag: self.inline(child, tag))

    def flow(self, element, items_of) -> list[Node | Block]:
        """``element``'s text, and ``items_of(items so far, child, tag)`` for each child."""
        if self.depth >= MAX_DEPTH:
            return _text(element.text_content())
        self.depth += 1
        try:
            items: list[Node | Block] = _text(element.text)
            for child in element:
                tag = _tag(child)
                if tag not in _DROPPED:
                    items += items_of(items, child, tag)
                items += _text(child.tail)
            return items
        finally:
            self.depth -= 1

    def line(self, items: list[Node | Block], element) -> list[Node | Block]:
        """``element``'s content as a line of its own after ``items``."""
        return [*([{"text": "\n"}] if _has_text(items) else []), *self.contents(element)]

    def inline(self, element, tag: str) -> list[Node | Block]:
        if tag == "br":
            return [{"text": "\n"}]
        if tag in _MEDIA:
            return media_blocks(element, tag)
        if tag in _AS_HTML:
            return [html_block(element)]
        contents = self.contents(element)
        if tag == "a" and element.get("href"):
            return _wrap(contents, lambda children: _link(element.get("href"), children))
        if tag in _MARKS:
            return _wrap(contents, lambda children: {"type": _MARKS[tag], "children": children})
        if tag in _LISTS:  # a list inside a paragraph: keep its items as lines
            return [item for li in element for item in [{"text": "\n"}, *self.contents(li)]]
        return contents  # span, mark, small, abbr, cite, q, ins, ...: their text only

    def list_items(self, element) -> tuple[list[Node], list[Block]]:
        """The ``li`` nodes of a list (nested lists kept); media inside go after the list."""
        items: list[Node] = []
        media: list[Block] = []
        for child in element:
            children: list[Node] = []
            for item in self.li_contents(child):
                (media if _is_block(item) else children).append(item)
            children = _normalise(children)
            if children:
                items.append({"type": "li", "children": children})
        return items, media

    def li_contents(self, element) -> list[Node | Block]:
        return self.flow(element, self.li_child)

    def li_child(self, items: list[Node | Block], child, tag: str) -> list[Node | Block]:
        if tag in _LISTS:
            nested, media = self.list_items(child)
            return [*([{"type": tag, "children": nested}] if nested else []), *media]
        if tag in _TEXT_BLOCKS or tag in _UNWRAPPED:
            return self.line(items, child)
        return self.inline(child, tag)

    def quoted(self, element) -> list[Node | Block]:
        """A blockquote's paragraphs as lines of one quote."""
        return self.flow(element, self.quoted_child)

    def quoted_child(self, items: list[Node | Block], child, tag: str) -> list[Node | Block]:
        if _is_block_level(tag) and tag not in _MEDIA and tag not in _AS_HTML:
            return self.line(items, child)
        return self.inline(child, tag)


def text_blocks(kind: str, items: list[Node | Block]) -> list[Block]:
    """Slate blocks of type ``kind`` from inline ``items``; blocks among them split them."""
    blocks: list[Block] = []
    run: list[Node] = []
    for item in [*items, None]:
        if item is not None and not _is_block(item):
            run.append(item)
            continue
        children = run if kind in _LISTS else _normalise(run)
        if children:
            blocks.append(slate_block({"type": kind, "children": children}))
        run = []
        if item is not None:
            blocks.append(item)
    return blocks


def slate_block(element: Node) -> Block:
    """A slate block holding one top-level slate element (a paragraph, heading or list)."""
    plaintext = _SPACES.sub(" ", _plaintext(element)).strip()
    return {"@type": "slate", "plaintext": plaintext, "value": [element]}


_LOCAL_IMAGE_SCALE = re.compile(r"(?<=^resolveuid/[0-9a-f]{32})/@@images/image.*$")


def media_blocks(element, tag: str) -> list[Block]:
    """An image, video or html block for ``img``, ``video`` or ``iframe``; [] without a source."""
    if tag == "img":
        src = element.get("src")
        if not src:
            return []
        return [
            {
                "@type": "image",
                # A body image kept in Plone (images.py): Volto wants the Image item's URL
                # and adds the scale itself.
                "url": _LOCAL_IMAGE_SCALE.sub("", src),
                "alt": element.get("alt") or "",
                "title": element.get("title") or "",
                "size": "l",
                "align": "center",
            }
        ]
    if tag == "video":
        src = element.get("src") or next(
            (source.get("src") for source in element.iter("source") if source.get("src")), None
        )
        return [{"@type": "video", "url": src}] if src else []
    if tag == "iframe":
        src = element.get("src")
        if not src:
            return []
        url = video_url(src)
        return [{"@type": "video", "url": url}] if url else [html_block(element)]
    return []


def video_url(src: str) -> str | None:
    """Turn an embed ``src`` (YouTube, Vimeo) into the URL Volto's video block plays.

    :param src: [required] The ``src`` of an iframe.
    :returns: The video URL, or None for other hosts or an embed without a video id.

    >>> video_url("https://www.youtube.com/embed/dQw4w9WgXcQ?rel=0")
    'https://www.youtube.com/watch?v=dQw4w9WgXcQ'
    >>> video_url("https://player.vimeo.com/video/76979871")
    'https://vimeo.com/76979871'
    """
    try:
        parts = urlsplit(src)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. a broken IPv6 host; the sanitiser keeps none, but be sure
        return None
    path = [segment for segment in parts.path.split("/") if segment]
    if host in _YOUTUBE_HOSTS:
        if host == "youtu.be" and path:
            video = path[0]
        elif len(path) >= 2 and path[0] in ("embed", "v", "shorts"):
            video = path[1]
        else:
            video = (parse_qs(parts.query).get("v") or [""])[0]
        return f"https://www.youtube.com/watch?v={video}" if video else None
    if host in _VIMEO_HOSTS:
        video = next((segment for segment in path if segment.isdigit()), None)
        return f"https://vimeo.com/{video}" if video else None
    return None


def html_block(element) -> Block:
    """Volto's html block with ``element``'s markup (already sanitised)."""
    from lxml import html as lxml_html

    return {
        "@type": "html",
        "html": lxml_html.tostring(element, encoding="unicode", with_tail=False),
    }


def _link(url: str, children: list[Node]) -> Node:
    return {"type": "link", "data": {"url": url}, "children": children}


def _wrap(items: list[Node | Block], make) -> list[Node | Block]:
    """``make(children)`` around each run of slate nodes in ``items``; blocks pass through."""
    wrapped: list[Node | Block] = []
    run: list[Node] = []
    for item in [*items, None]:
        if item is not None and not _is_block(item):
            run.append(item)
            continue
        if _has_text(run):
            wrapped.append(make(run))
        elif run:
            wrapped += run
        run = []
        if item is not None:
            wrapped.append(item)
    return wrapped


def _normalise(nodes: list[Node]) -> list[Node]:
    """Merge adjacent text, drop empty text and marks, trim the edges; [] if no text is left."""
    merged: list[Node] = []
    for node in nodes:
        if "text" in node:
            if merged and "text" in merged[-1]:
                merged[-1] = {"text": merged[-1]["text"] + node["text"]}
            else:
                merged.append(dict(node))
        elif node.get("type") in _LISTS or _has_text(node.get("children", [])):
            merged.append(node)
    for node in merged:
        if "text" in node:
            node["text"] = re.sub(r" {2,}", " ", node["text"])
    _trim(merged, 0, str.lstrip)
    _trim(merged, -1, str.rstrip)
    merged = [node for node in merged if "text" not in node or node["text"]]
    return merged if _has_text(merged) else []


def _trim(nodes: list[Node], index: int, strip) -> None:
    """Strip the whitespace at one edge (first or last leaf, however deeply nested)."""
    while nodes:
        node = nodes[index]
        if "text" in node:
            node["text"] = strip(node["text"])
            return
        if node.get("type") in _LISTS:
            return
        nodes = node.get("children", [])


def _text(value: str | None) -> list[Node]:
    return [{"text": _SPACES.sub(" ", value)}] if value else []


def _has_text(nodes: list[Node]) -> bool:
    return any(
        node.get("text", "").strip() or _has_text(node.get("children", [])) for node in nodes
    )


def _plaintext(node: Node) -> str:
    if "text" in node:
        return node["text"].replace("\n", " ")
    # List items, and a list nested in an item, are words of their own.
    return "".join(
        (" " if node.get("type") in _LISTS or child.get("type") in _LISTS else "")
        + _plaintext(child)
        for child in node.get("children", [])
    )


def _is_block(item: Node | Block) -> bool:
    return "@type" in item


def _is_block_level(tag: str) -> bool:
    return (
        tag in _TEXT_BLOCKS
        or tag in _LISTS
        or tag in _UNWRAPPED
        or tag in _AS_HTML
        or tag in _MEDIA
        or tag == "blockquote"
    )


def _tag(element) -> str:
    tag = element.tag
    return tag.lower() if isinstance(tag, str) else ""  # comments and processing instructions
