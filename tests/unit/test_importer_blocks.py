"""Sanitised post HTML as Volto blocks (``blogs.importer.blocks``): no Plone needed."""

from __future__ import annotations

import types

import pytest

from collective.plonecelery.blogs.importer import blocks
from collective.plonecelery.blogs.importer.blocks import html_to_blocks
from collective.plonecelery.blogs.importer.blocks import video_url
from collective.plonecelery.blogs.importer.blocks import volto_blocks
from collective.plonecelery.blogs.readers.sanitize import clean_html

IFRAME_HOSTS = ("www.youtube.com", "player.vimeo.com")


def convert(html: str) -> list[dict]:
    """As the importer does: the reader sanitises, then the blocks are made."""
    return html_to_blocks(clean_html(html, iframe_hosts=IFRAME_HOSTS))


def slate(kind: str, *children) -> dict:
    return {"type": kind, "children": list(children)}


def text(value: str) -> dict:
    return {"text": value}


def values(result: list[dict]) -> list:
    """Each block as its slate element, or (type, url) for the others."""
    return [
        block["value"][0] if block["@type"] == "slate" else (block["@type"], block.get("url"))
        for block in result
    ]


def test_paragraphs_are_one_slate_block_each_with_their_plain_text():
    result = convert("<p>First  paragraph\n of text.</p><p>Second.</p>")
    assert result == [
        {
            "@type": "slate",
            "plaintext": "First paragraph of text.",
            "value": [slate("p", text("First paragraph of text."))],
        },
        {"@type": "slate", "plaintext": "Second.", "value": [slate("p", text("Second."))]},
    ]


def test_links_and_marks_are_slate_inline_elements():
    [block] = convert(
        '<p>Read <a href="https://example.org/a">the <strong>full</strong> story</a>, '
        "<em>now</em> or <b>later</b>.</p>"
    )
    assert block["value"] == [
        slate(
            "p",
            text("Read "),
            {
                "type": "link",
                "data": {"url": "https://example.org/a"},
                "children": [text("the "), slate("strong", text("full")), text(" story")],
            },
            text(", "),
            slate("em", text("now")),
            text(" or "),
            slate("strong", text("later")),
            text("."),
        )
    ]
    assert block["plaintext"] == "Read the full story, now or later."


def test_headings_keep_their_level_and_h1_becomes_h2():
    result = convert("<h1>Top</h1><h2>Two</h2><h3>Three</h3><h6>Six</h6>")
    assert values(result) == [
        slate("h2", text("Top")),
        slate("h2", text("Two")),
        slate("h3", text("Three")),
        slate("h6", text("Six")),
    ]


def test_lists_nest_and_keep_their_kind():
    result = convert(
        "<ul><li>one</li><li>two<ol><li>two a</li></ol></li></ul><ol><li><p>first</p></li></ol>"
    )
    assert values(result) == [
        slate(
            "ul",
            slate("li", text("one")),
            slate("li", text("two"), slate("ol", slate("li", text("two a")))),
        ),
        slate("ol", slate("li", text("first"))),
    ]
    assert result[0]["plaintext"] == "one two two a"


def test_images_split_the_paragraph_they_are_in_keeping_the_order():
    result = convert(
        '<p>Before <img src="https://blog.example.org/a.png" alt="A" title="T"> after</p>'
        '<figure><img src="https://blog.example.org/b.png"><figcaption>Caption</figcaption>'
        "</figure>"
    )
    assert result[1] == {
        "@type": "image",
        "url": "https://blog.example.org/a.png",
        "alt": "A",
        "title": "T",
        "size": "l",
        "align": "center",
    }
    assert values(result) == [
        slate("p", text("Before")),
        ("image", "https://blog.example.org/a.png"),
        slate("p", text("after")),
        ("image", "https://blog.example.org/b.png"),
        slate("p", text("Caption")),
    ]


def test_an_image_in_a_link_or_mark_is_still_an_image_block():
    result = convert(
        '<p><a href="https://example.org/big"><img src="https://blog.example.org/a.png"></a>'
        "<strong>bold <img src='https://blog.example.org/b.png'> text</strong></p>"
    )
    assert values(result) == [
        ("image", "https://blog.example.org/a.png"),
        slate("p", slate("strong", text("bold"))),
        ("image", "https://blog.example.org/b.png"),
        slate("p", slate("strong", text("text"))),
    ]


def test_iframes_and_videos_become_video_blocks_in_order():
    result = convert(
        "<p>Watch:</p>"
        '<iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ?rel=0"></iframe>'
        "<p>and</p>"
        '<iframe src="https://player.vimeo.com/video/76979871"></iframe>'
        '<video controls src="https://blog.example.org/clip.mp4"></video>'
        '<video><source src="https://blog.example.org/other.mp4"></video>'
        '<iframe src="https://evil.example/embed/x"></iframe>'  # not an allowed host: dropped
    )
    assert values(result) == [
        slate("p", text("Watch:")),
        ("video", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
        slate("p", text("and")),
        ("video", "https://vimeo.com/76979871"),
        ("video", "https://blog.example.org/clip.mp4"),
        ("video", "https://blog.example.org/other.mp4"),
    ]


def test_an_allowed_iframe_that_is_no_video_and_tables_become_html_blocks():
    html = (
        '<iframe src="https://maps.example.org/embed?x=1"></iframe>'
        "<table><tr><td>a</td></tr></table><pre>code  kept</pre>"
    )
    result = html_to_blocks(clean_html(html, iframe_hosts=("maps.example.org",)))
    assert [block["@type"] for block in result] == ["html", "html", "html"]
    assert result[0]["html"].startswith('<iframe src="https://maps.example.org/embed?x=1"')
    assert 'sandbox="' in result[0]["html"]  # as sanitised
    assert result[1]["html"] == "<table><tbody><tr><td>a</td></tr></tbody></table>"
    assert result[2]["html"] == "<pre>code  kept</pre>"


def test_line_breaks_quotes_and_loose_text():
    result = convert(
        "Loose <i>text</i><br>on two lines<hr>"
        "<blockquote><p>Quoted one.</p><p>Quoted two.</p></blockquote><div><p>In a div</p></div>"
    )
    assert values(result) == [
        slate("p", text("Loose "), slate("em", text("text")), text("\non two lines")),
        slate("blockquote", text("Quoted one.\nQuoted two.")),
        slate("p", text("In a div")),
    ]


def test_empty_paragraphs_and_empty_marks_make_no_blocks():
    assert convert("<p> </p><p><strong> </strong></p><p><br></p>") == []
    assert convert("") == []
    assert html_to_blocks("   ") == []


def test_unsafe_markup_never_reaches_the_blocks():
    result = convert(
        '<p onclick="x()">Hi<script>alert(1)</script> <a href="javascript:alert(1)">there</a></p>'
    )
    assert values(result) == [slate("p", text("Hi there"))]


def test_a_title_block_comes_first_and_the_layout_lists_every_block_in_order():
    data = volto_blocks("<p>One</p><h2>Two</h2>", seed="blog:1")
    ids = data["blocks_layout"]["items"]
    assert set(ids) == set(data["blocks"]) and len(ids) == 3
    assert [data["blocks"][block_id]["@type"] for block_id in ids] == ["title", "slate", "slate"]
    assert data["blocks"][ids[2]]["plaintext"] == "Two"


def test_block_ids_are_the_same_on_re_import_and_differ_between_posts():
    first = volto_blocks("<p>One</p>", seed="blog:1")
    again = volto_blocks("<p>One, changed</p><p>Added</p>", seed="blog:1")
    other = volto_blocks("<p>One</p>", seed="blog:2")
    assert again["blocks_layout"]["items"][:2] == first["blocks_layout"]["items"]
    assert len(again["blocks_layout"]["items"]) == 3
    assert not set(other["blocks_layout"]["items"]) & set(first["blocks_layout"]["items"])
    assert len(set(again["blocks_layout"]["items"])) == 3


@pytest.mark.parametrize(
    ("src", "url"),
    [
        ("https://www.youtube.com/embed/abc_D-1", "https://www.youtube.com/watch?v=abc_D-1"),
        ("https://www.youtube-nocookie.com/embed/abc", "https://www.youtube.com/watch?v=abc"),
        ("https://www.youtube.com/watch?v=abc&t=3", "https://www.youtube.com/watch?v=abc"),
        ("https://youtu.be/abc", "https://www.youtube.com/watch?v=abc"),
        ("https://player.vimeo.com/video/123?h=9", "https://vimeo.com/123"),
        ("https://www.youtube.com/embed/", None),
        ("https://player.vimeo.com/", None),
        ("https://maps.example.org/embed/1", None),
        ("https://[::1/embed/x", None),
    ],
)
def test_video_url_is_what_voltos_video_block_plays(src, url):
    assert video_url(src) == url


# -- when blocks are written -------------------------------------------------------------------

FIELDS = {"title", "text", "blocks", "blocks_layout"}


def item():
    return types.SimpleNamespace(portal_type="News Item")


@pytest.fixture
def volto_site(monkeypatch):
    installed = {"value": True}
    monkeypatch.setattr(blocks, "volto_installed", lambda: installed["value"])
    return installed


def test_auto_writes_blocks_on_a_volto_site_and_replaces_them_on_re_import(volto_site):
    obj = item()
    blocks.write_blocks(obj, html="<p>A</p><p>B</p>", seed="s:1", mode="auto", fields=FIELDS)
    assert obj.blocks_layout == volto_blocks("<p>A</p><p>B</p>", seed="s:1")["blocks_layout"]
    blocks.write_blocks(obj, html="<p>Changed</p>", seed="s:1", mode="auto", fields=FIELDS)
    assert len(obj.blocks) == len(obj.blocks_layout["items"]) == 2  # replaced, not appended
    assert obj.blocks[obj.blocks_layout["items"][1]]["plaintext"] == "Changed"


def test_auto_leaves_a_classic_site_alone(volto_site):
    volto_site["value"] = False
    obj = item()
    assert blocks.write_blocks(obj, html="<p>A</p>", seed="s:1", mode="auto", fields=FIELDS) is None
    assert not hasattr(obj, "blocks")
    fields = {"title", "text"}  # no blocks behavior on the type
    assert blocks.write_blocks(obj, html="<p>A</p>", seed="s:1", mode="auto", fields=fields) is None


def test_on_writes_without_plone_volto_and_says_why_it_cannot(volto_site):
    volto_site["value"] = False
    obj = item()
    blocks.write_blocks(obj, html="<p>A</p>", seed="s:1", mode="on", fields=FIELDS)
    assert len(obj.blocks) == 2
    note = blocks.write_blocks(obj, html="<p>A</p>", seed="s:1", mode="on", fields={"text"})
    assert note == "imported without Volto blocks: News Item lacks the volto.blocks behavior"


def test_off_never_touches_the_blocks(volto_site):
    obj = item()
    obj.blocks = {"kept": {"@type": "slate"}}
    assert blocks.write_blocks(obj, html="<p>A</p>", seed="s:1", mode="off", fields=FIELDS) is None
    assert obj.blocks == {"kept": {"@type": "slate"}}


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("<strong>", "</strong>"),
        ("<ul><li>", "</li></ul>"),
        ("<blockquote><div>", "</div></blockquote>"),
    ],
)
def test_deep_nesting_keeps_its_text_and_never_fails_the_import(opening, closing):
    result = convert(f"<p>Top</p>{opening * 600}deep{closing * 600}<p>End</p>")
    assert result[0]["plaintext"] == "Top" and result[-1]["plaintext"] == "End"
    assert any("deep" in block.get("plaintext", "") for block in result)
