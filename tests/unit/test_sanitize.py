"""HTML sanitising of remote blog content."""

from pathlib import Path

import pytest

from collective.plonecelery.blogs.readers.sanitize import clean_html
from collective.plonecelery.blogs.readers.sanitize import html_to_text

HOSTILE = (Path(__file__).parent / "data" / "hostile.html").read_text()
YOUTUBE = ("www.youtube.com",)


def test_scripts_styles_handlers_and_javascript_urls_are_removed():
    cleaned = clean_html(HOSTILE, iframe_hosts=YOUTUBE)
    lowered = cleaned.lower()
    for forbidden in (
        "<script",
        "document.cookie",
        "<style",
        "display: none",
        "onclick",
        "onerror",
        "onload",
    ):
        assert forbidden not in lowered
    assert "javascript:" not in lowered
    assert "data:" not in lowered
    assert "<form" not in lowered and "<input" not in lowered and "<svg" not in lowered


def test_only_https_iframes_from_allowed_hosts_survive():
    cleaned = clean_html(HOSTILE, iframe_hosts=YOUTUBE)
    assert 'src="https://www.youtube.com/embed/dQw4w9WgXcQ"' in cleaned
    assert cleaned.count("<iframe") == 1
    assert "evil.example.com" not in cleaned
    assert "fallback" not in cleaned
    assert "insecure" not in cleaned
    assert 'sandbox="' in cleaned


def test_without_iframe_hosts_every_iframe_goes():
    cleaned = clean_html(HOSTILE)
    assert "<iframe" not in cleaned and "youtube" not in cleaned


def test_ordinary_formatting_is_kept():
    cleaned = clean_html(HOSTILE, iframe_hosts=YOUTUBE)
    for kept in (
        "<h2>Title</h2>",
        '<img src="https://cdn.example.org/ok.png" alt="ok">',
        "<figcaption>Caption</figcaption>",
        "<blockquote>Quote</blockquote>",
        '<pre><code>print("hi")</code></pre>',
        "<li>one</li>",
        "<th>H</th>",
        "<td>D</td>",
    ):
        assert kept in cleaned
    assert '<a href="https://good.example.org/" rel="noopener noreferrer">good</a>' in cleaned


def test_relative_urls_are_made_absolute_with_base_url():
    cleaned = clean_html(
        '<a href="/about">a</a><img src="pic.png">', base_url="https://blog.example.org/2024/post/"
    )
    assert 'href="https://blog.example.org/about"' in cleaned
    assert 'src="https://blog.example.org/2024/post/pic.png"' in cleaned


def test_iframe_host_match_is_exact():
    html = '<iframe src="https://www.youtube.com.evil.example/x"></iframe><iframe src="https://evil/?www.youtube.com"></iframe>'
    assert clean_html(html, iframe_hosts=YOUTUBE) == ""


def test_empty_input():
    assert clean_html("") == ""
    assert html_to_text("") == ""


def test_html_to_text():
    assert html_to_text("<p>Fish &amp; chips</p><p>today</p>") == "Fish & chips today"
    assert (
        html_to_text("<h1>A</h1>\n\n  <ul><li>b</li><li>c</li></ul><script>alert(1)</script>")
        == "A b c"
    )
    assert html_to_text("Caf&#233; &#8220;news&#8221;") == "Café “news”"
    assert html_to_text("<b>bold</b>er") == "bolder"


@pytest.mark.parametrize("hosts", [(), YOUTUBE], ids=["no-iframes", "iframes"])
def test_cite_urls_are_checked_like_links(hosts):
    # nh3 keeps 'cite' without checking its scheme; found by tests/integration/test_hostile_xss.py
    html = (
        '<q cite="javascript:alert(1)">a</q><blockquote cite="JaVa&#x09;script:x">b</blockquote>'
        '<q cite=" &#14; vbscript:x">c</q><q cite="https://ok.example/">d</q>'
    )
    cleaned = clean_html(html, iframe_hosts=hosts)
    assert "script:" not in cleaned
    assert cleaned.count("cite=") == 1 and 'cite="https://ok.example/"' in cleaned
