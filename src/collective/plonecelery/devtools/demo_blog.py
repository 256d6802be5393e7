"""A stand-in Ghost blog for demos: a real HTTP server on loopback with a Ghost Content API.

Run it on its own::

    python -m collective.plonecelery.devtools.demo_blog --port 2368 --key 0123456789abcdef01234567ab
    python -m collective.plonecelery.devtools.demo_blog curl \\
        --plone-url http://localhost:8080/Plone \\
        --source demo-blog --secret s3cret [--post 6650f0a1b2c3d4e5f6a7b801]

or from Python (``make run`` does this)::

    from collective.plonecelery.devtools import demo_blog as blog

    server = blog.serve(host="127.0.0.1", port=2368, key=blog.DEMO_KEY)
    server.url                      # 'http://127.0.0.1:2368'
    server.blog.publish(blog.DRAFT_ID)
    print(blog.curl_line(plone_url=..., source_id="demo-blog", secret=...))  # WELCOME_ID
    server.shutdown()

What it serves (only what the importer reads):

* ``GET /ghost/api/content/posts/?key=..&page=..&limit=..&include=tags,authors`` (browse,
  newest first, with ``meta.pagination``; ``filter=id:<id>`` for one post) and
  ``GET /ghost/api/content/posts/{id}/?key=..``;
  only published posts, anything else is Ghost's 404; a wrong key is Ghost's 401;
* ``GET /content/images/<slug>.png``: a small generated PNG per post (the feature images);
* demo controls, no key (loopback only): ``GET /demo/posts`` lists every post with its
  status, ``POST /demo/posts/{id}/publish`` and ``/unpublish``, ``POST /demo/posts/{id}`` with
  a JSON object of fields to change (title, html, custom_excerpt, tags).

(Over 400 lines on purpose: a self-contained stand-in blog, its sample posts, HTTP handler
and command line in one file, so that it runs as ``python -m`` anywhere.)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import shlex
import struct
import sys
import threading
import time
import zlib
from datetime import UTC
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

logger = logging.getLogger("collective.plonecelery.demo")

#: Content API key of the demo blog (26 hex digits, like Ghost's).
DEMO_KEY = "6b1d3c2e5f4a7b8c9d0e1f2a3b"
DEFAULT_PORT = 2368
API_PATH = "/ghost/api/content/posts/"
#: A published post, not in Plone until a webhook (or a backfill) brings it.
WELCOME_ID = "6650f0a1b2c3d4e5f6a7b801"
#: A post that starts as a draft: publish it on the blog, then send its webhook.
DRAFT_ID = "6650f0a1b2c3d4e5f6a7b8c9"

_SEED = [
    {
        "id": WELCOME_ID,
        "slug": "welcome-to-the-demo-blog",
        "title": "Welcome to the demo blog",
        "html": "<p>This post lives on a <strong>stand-in Ghost blog</strong>; Plone imported it "
        "through a worker.</p><p>Edit it on the blog and send the webhook again.</p>",
        "custom_excerpt": "A post imported from a stand-in Ghost blog.",
        "tags": ["Demo", "Getting Started"],
        "authors": ["Ada Lovelace"],
        "status": "published",
        "published_at": "2024-05-01T09:00:00.000+00:00",
        "color": (0x2E, 0x86, 0xC1),
    },
    {
        "id": "6650f0a1b2c3d4e5f6a7b802",
        "slug": "webhooks-and-workers",
        "title": "Webhooks and workers",
        "html": "<h2>Why a worker?</h2><p>Front-end servers only verify the webhook and queue a "
        "job. A backend worker fetches the post from the blog's API.</p>"
        '<script>alert("never imported")</script>',
        "custom_excerpt": None,
        "tags": ["Demo"],
        "authors": ["Grace Hopper"],
        "status": "published",
        "published_at": "2024-05-02T09:00:00.000+00:00",
        "color": (0xCA, 0x6F, 0x1E),
    },
    {
        "id": "6650f0a1b2c3d4e5f6a7b803",
        "slug": "signed-deliveries",
        "title": "Signed deliveries",
        "html": '<p>Each webhook carries an <a href="https://ghost.org/docs/webhooks/">HMAC '
        "signature</a> over the raw body.</p>",
        "custom_excerpt": "Why the signature is the authentication.",
        "tags": ["Security"],
        "authors": ["Ada Lovelace", "Grace Hopper"],
        "status": "published",
        "published_at": "2024-05-03T09:00:00.000+00:00",
        "color": (0x1E, 0x84, 0x49),
    },
    {
        "id": DRAFT_ID,
        "slug": "coming-soon",
        "title": "Coming soon",
        "html": "<p>This post was a draft until you published it.</p>",
        "custom_excerpt": "Publish me, then send the webhook.",
        "tags": ["Demo"],
        "authors": ["Grace Hopper"],
        "status": "draft",
        "published_at": None,
        "color": (0x88, 0x4E, 0xA0),
    },
]


def png_bytes(*, width: int = 64, height: int = 40, rgb: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A valid PNG of one colour, made without any imaging library.

    >>> png_bytes(rgb=(255, 0, 0))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class DemoBlog:
    """Posts held in memory, shaped like Ghost's; safe to use from several threads."""

    def __init__(self, *, key: str = DEMO_KEY, base_url: str = f"http://127.0.0.1:{DEFAULT_PORT}"):
        self.key = key
        self.base_url = base_url.rstrip("/")
        #: Seconds every Content API answer waits before it is sent (a remote blog's latency;
        #: benchmarks/run.py sets it). Images and demo controls answer at once.
        self.latency = 0.0
        self._lock = threading.Lock()
        self._posts: dict[str, dict[str, Any]] = {}
        for seed in _SEED:
            post = copy.deepcopy(seed)
            post["updated_at"] = post["published_at"] or _now()
            self._posts[post["id"]] = post

    # -- demo controls ---------------------------------------------------------

    def publish(self, post_id: str) -> dict[str, Any]:
        """Publish a post (a draft gets its publication date now); returns its API form."""
        with self._lock:
            post = self._get(post_id)
            post["status"] = "published"
            post["published_at"] = post["published_at"] or _now()
            post["updated_at"] = _now()
            return self._api_post(post, include={"tags", "authors"})

    def unpublish(self, post_id: str) -> dict[str, Any]:
        """Turn a post back into a draft: the Content API answers 404 for it."""
        with self._lock:
            post = self._get(post_id)
            post["status"] = "draft"
            post["updated_at"] = _now()
            return self._api_post(post, include={"tags", "authors"})

    def edit(self, post_id: str, **changes: Any) -> dict[str, Any]:
        """Change ``title``, ``html``, ``custom_excerpt`` or ``tags`` (a list of names)."""
        allowed = {"title", "html", "custom_excerpt", "tags"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot edit {', '.join(sorted(unknown))}; editable: {allowed}")
        with self._lock:
            post = self._get(post_id)
            post.update(copy.deepcopy(changes))
            post["updated_at"] = _now()
            return self._api_post(post, include={"tags", "authors"})

    def add_posts(self, count: int, *, prefix: str = "bulk") -> list[str]:
        """Publish ``count`` more short posts (for backfills that take a while); their ids."""
        ids = []
        with self._lock:
            for n in range(count):
                post_id = f"{zlib.crc32(prefix.encode()):08x}{n:016x}"  # 24 hex, like Ghost
                self._posts[post_id] = {
                    "id": post_id,
                    "slug": f"{prefix}-{n}",
                    "title": f"{prefix.capitalize()} post {n}",
                    "html": f"<p>Post {n} of {count}.</p>",
                    "custom_excerpt": None,
                    "tags": ["Demo"],
                    "authors": ["Ada Lovelace"],
                    "status": "published",
                    "published_at": f"2023-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
                    f"{n % 60:02d}.000+00:00",
                    "updated_at": _now(),
                    "color": (n % 256, 90, 160),
                }
                ids.append(post_id)
        return ids

    def list_all(self) -> list[dict[str, Any]]:
        """Every post, drafts included: ``[{id, title, status, url}]``."""
        with self._lock:
            return [
                {"id": p["id"], "title": p["title"], "status": p["status"], "url": self._url(p)}
                for p in self._sorted()
            ]

    # -- Content API ----------------------------------------------------------------

    def read(self, post_id: str, *, include: set[str]) -> dict[str, Any] | None:
        """The API form of a published post, or None (Ghost's 404)."""
        with self._lock:
            post = self._posts.get(post_id)
            if post is None or post["status"] != "published":
                return None
            return self._api_post(post, include=include)

    def browse(self, *, page: int, limit: int | None, include: set[str]) -> dict[str, Any]:
        """One page of published posts, newest first, with Ghost's ``meta.pagination``."""
        with self._lock:
            published = [p for p in self._sorted() if p["status"] == "published"]
            total = len(published)
            size = limit or max(total, 1)
            pages = max(1, -(-total // size))
            chosen = published[(page - 1) * size : page * size]
            return {
                "posts": [self._api_post(p, include=include) for p in chosen],
                "meta": {
                    "pagination": {
                        "page": page,
                        "limit": limit or "all",
                        "pages": pages,
                        "total": total,
                        "next": page + 1 if page < pages else None,
                        "prev": page - 1 if page > 1 else None,
                    }
                },
            }

    def image(self, slug: str) -> bytes | None:
        with self._lock:
            for post in self._posts.values():
                if post["slug"] == slug:
                    return png_bytes(rgb=post["color"])
        return None

    def webhook_body(self, post_id: str, *, event: str = "post.published") -> bytes:
        """A Ghost-shaped webhook body about ``post_id`` (``post.deleted``: only ``previous``)."""
        with self._lock:
            current = self._api_post(self._get(post_id), include={"tags", "authors"})
        if event == "post.deleted":
            envelope = {"current": {}, "previous": current}
        else:
            envelope = {"current": current, "previous": {}}
        return json.dumps({"post": envelope}, separators=(",", ":")).encode()

    def _get(self, post_id: str) -> dict[str, Any]:
        try:
            return self._posts[post_id]
        except KeyError:
            raise KeyError(f"the demo blog has no post {post_id!r}") from None

    def _sorted(self) -> list[dict[str, Any]]:
        return sorted(
            self._posts.values(), key=lambda p: p["published_at"] or p["updated_at"], reverse=True
        )

    def _url(self, post: dict[str, Any]) -> str:
        return f"{self.base_url}/{post['slug']}/"

    def _api_post(self, post: dict[str, Any], *, include: set[str]) -> dict[str, Any]:
        text = re.sub(r"<[^>]+>", " ", post["html"])
        data = {
            "id": post["id"],
            "uuid": f"00000000-0000-4000-8000-{post['id'][-12:]}",
            "title": post["title"],
            "slug": post["slug"],
            "html": post["html"],
            "feature_image": f"{self.base_url}/content/images/{post['slug']}.png",
            "featured": False,
            "visibility": "public",
            "status": post["status"],
            "created_at": post["published_at"] or post["updated_at"],
            "updated_at": post["updated_at"],
            "published_at": post["published_at"],
            "custom_excerpt": post["custom_excerpt"],
            "excerpt": " ".join(text.split())[:300],
            "url": self._url(post),
        }
        if "tags" in include:
            data["tags"] = [
                {
                    "id": f"tag-{name.lower()}",
                    "name": name,
                    "slug": name.lower().replace(" ", "-"),
                    "visibility": "public",
                }
                for name in post["tags"]
            ]
        if "authors" in include:
            data["authors"] = [
                {"id": f"author-{i}", "name": name, "slug": name.lower().replace(" ", "-")}
                for i, name in enumerate(post["authors"])
            ]
        return data


class _Handler(BaseHTTPRequestHandler):
    server: BlogServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        blog = self.server.blog
        if parts.path.startswith(API_PATH):
            self._content_api(parts.path[len(API_PATH) :], query)
        elif match := re.fullmatch(r"/content/images/([a-z0-9-]+)\.png", parts.path):
            data = blog.image(match.group(1))
            if data is None:
                self._send(404, b"no such image", "text/plain")
            else:
                self._send(200, data, "image/png")
        elif parts.path == "/demo/posts":
            self._json(200, {"posts": blog.list_all()})
        else:
            self._ghost_error(404, "NotFoundError", "Resource not found")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        blog = self.server.blog
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if match := re.fullmatch(r"/demo/posts/([0-9a-f]+)/(publish|unpublish)", path):
                post_id, verb = match.groups()
                result = blog.publish(post_id) if verb == "publish" else blog.unpublish(post_id)
            elif match := re.fullmatch(r"/demo/posts/([0-9a-f]+)", path):
                result = blog.edit(match.group(1), **json.loads(body or b"{}"))
            else:
                self._json(404, {"error": "unknown demo action"})
                return
        except KeyError as exc:
            self._json(404, {"error": str(exc.args[0])})
            return
        except (TypeError, ValueError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"post": result})

    def _content_api(self, rest: str, query: dict[str, str]) -> None:
        blog = self.server.blog
        if blog.latency > 0:
            time.sleep(blog.latency)
        if not query.get("key"):
            self._ghost_error(403, "NoPermissionError", "Authorization failed: no Content API key")
            return
        if query["key"] != blog.key:
            self._ghost_error(401, "UnauthorizedError", "Unknown Content API Key")
            return
        include = {part.strip() for part in query.get("include", "").split(",") if part.strip()}
        wanted = query.get("filter", "")
        if rest == "" and wanted.startswith("id:"):
            # One post by id, as the reader asks: 200 with an empty list when not published.
            post = blog.read(wanted[3:], include=include)
            self._json(200, {"posts": [post] if post else [], "meta": {"pagination": {}}})
            return
        if rest == "":
            try:
                page = max(1, int(query.get("page", "1")))
                limit = (
                    None if query.get("limit") == "all" else max(1, int(query.get("limit", "15")))
                )
            except ValueError:
                self._ghost_error(400, "ValidationError", "page and limit must be numbers")
                return
            self._json(200, blog.browse(page=page, limit=limit, include=include))
            return
        post = blog.read(rest.strip("/"), include=include)
        if post is None:
            self._ghost_error(404, "NotFoundError", "Resource not found error, cannot read post.")
        else:
            self._json(200, {"posts": [post]})

    def _ghost_error(self, status: int, kind: str, message: str) -> None:
        self._json(status, {"errors": [{"message": message, "context": None, "type": kind}]})

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        # Requests carry the API key in the query string: log the path only.
        logger.info("%s %s", self.command, urlsplit(self.path).path)


class BlogServer(ThreadingHTTPServer):
    """The demo blog's HTTP server; :func:`serve` starts it in a daemon thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], blog: DemoBlog):
        super().__init__(address, _Handler)
        self.blog = blog
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BlogServer:
        self._thread = threading.Thread(target=self.serve_forever, name="demo-blog", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            super().shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()


def serve(*, host: str = "127.0.0.1", port: int = DEFAULT_PORT, key: str = DEMO_KEY) -> BlogServer:
    """Start the demo blog on ``host:port`` (port 0 picks a free one); returns the running server.

    Loopback only by design: it has no authentication for its demo controls.
    """
    blog = DemoBlog(key=key)
    server = BlogServer((host, port), blog)
    blog.base_url = server.url  # the real port, when 0 was asked for
    return server.start()


def source_settings(
    *,
    blog_url: str,
    key: str = DEMO_KEY,
    source_id: str = "demo-blog",
    secret: str,
    target: str = "",
    scheme: str = "ghost",
) -> dict[str, Any]:
    """Settings of a source reading the demo blog (``SourceConfig.from_dict`` / ``add_source``).

    ``allow_private`` is on because the demo blog listens on loopback.
    """
    return {
        "id": source_id,
        "title": "Demo blog",
        "kind": "ghost",
        "api_url": blog_url,
        "api_key": key,
        "scheme": scheme,
        "secret": secret,
        "target": target,
        "allow_private": True,
    }


def webhook_url(*, plone_url: str, source_id: str, event: str = "post.published") -> str:
    """The Plone webhook URL a Ghost webhook for ``event`` would be configured with."""
    return f"{plone_url.rstrip('/')}/++api++/@blog-webhook/{source_id}?event={event}"


def webhook_body(post_id: str, *, event: str = "post.published") -> bytes:
    """The smallest Ghost webhook body naming ``post_id``: Plone only reads the id from it."""
    post = {"id": post_id}
    envelope = {"current": {}, "previous": post} if event == "post.deleted" else {"current": post}
    return json.dumps({"post": envelope}, separators=(",", ":")).encode()


def curl_line(
    *,
    plone_url: str,
    source_id: str,
    secret: str,
    post_id: str = WELCOME_ID,
    event: str = "post.published",
    scheme: str = "ghost",
    now: float | None = None,
) -> str:
    """A ``curl`` command sending a correctly signed Ghost webhook about ``post_id`` to Plone.

    Ghost signatures carry a timestamp, so a ``scheme='ghost'`` line is only accepted within the
    source's tolerance (5 minutes by default); schemes without a timestamp
    (``hmac-sha256-base64``) give a line that stays valid (until the delivery log's dedupe
    window has passed, a repeated line is acknowledged as a duplicate).
    """
    from collective.plonecelery.blogs.verify.signatures import sign

    body = webhook_body(post_id, event=event)
    headers = {"Content-Type": "application/json"}
    headers.update(sign(scheme=scheme, secret=secret, body=body, now=now))
    parts = ["curl", "-i", "-X", "POST"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    url = webhook_url(plone_url=plone_url, source_id=source_id, event=event)
    parts += ["--data-binary", body.decode(), url]
    return " ".join(shlex.quote(part) for part in parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collective.plonecelery.devtools.demo_blog",
        description="A stand-in Ghost blog (Content API) for demos, on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--key", default=DEMO_KEY, help="Content API key the blog accepts")
    commands = parser.add_subparsers(dest="command")
    curl = commands.add_parser("curl", help="print a signed webhook curl line and exit")
    curl.add_argument(
        "--plone-url", required=True, help="site URL, e.g. http://localhost:8080/Plone"
    )
    curl.add_argument("--source", required=True, help="source id in Plone")
    curl.add_argument("--secret", required=True, help="the source's webhook secret")
    curl.add_argument("--post", default=WELCOME_ID, help="demo post id")
    curl.add_argument("--event", default="post.published")
    curl.add_argument("--scheme", default="ghost")
    options = parser.parse_args(argv)
    if options.command == "curl":
        print(
            curl_line(
                plone_url=options.plone_url,
                source_id=options.source,
                secret=options.secret,
                post_id=options.post,
                event=options.event,
                scheme=options.scheme,
            )
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = serve(host=options.host, port=options.port, key=options.key)
    print(f"Demo Ghost blog on {server.url} (Content API key {options.key}); Ctrl-C stops it.")
    print(f"Draft to publish: curl -X POST {server.url}/demo/posts/{DRAFT_ID}/publish")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
