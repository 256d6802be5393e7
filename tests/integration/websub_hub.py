"""A small real WebSub hub for the integration tests (W3C WebSub, the hub's side).

It accepts ``hub.mode=subscribe|unsubscribe`` form POSTs (202), then verifies the intent
asynchronously, as a real hub does: it GETs the callback with ``hub.challenge`` (and
``hub.lease_seconds``) and keeps the subscription only if the challenge comes back. It
can publish: POST a feed to every subscriber of a topic, signed with the subscription's
secret (``X-Hub-Signature: sha256=<hmac>``).

Usage::

    hub = Hub(lease_seconds=12).start()
    ...  # hub.url is what a feed's <link rel="hub"> names
    hub.publish(topic, body, content_type="application/atom+xml")  # [HTTP status, ...]
    hub.stop()
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx


@dataclass
class Subscription:
    topic: str
    callback: str
    secret: str
    expires: float


@dataclass
class Event:
    """One thing the hub saw or did: a request received, a verification made."""

    kind: str  # 'request' | 'verified' | 'refused'
    mode: str
    topic: str
    callback: str
    at: float = field(default_factory=time.time)
    detail: str = ""


class Hub:
    """The hub: a threaded HTTP server on 127.0.0.1 (``port`` 0: a free one)."""

    def __init__(self, *, lease_seconds: int = 12, port: int = 0, delay: float = 0.2):
        self.lease_seconds = lease_seconds
        self.port = port
        self.delay = delay
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.events: list[Event] = []
        #: Every secret a subscriber sent (tests look for them where they must not be).
        self.secrets: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub"

    def start(self) -> Hub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                form = {
                    key: values[0]
                    for key, values in parse_qs(self.rfile.read(length).decode()).items()
                }
                status, message = hub.receive(form)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(message.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def receive(self, form: dict[str, str]) -> tuple[int, str]:
        mode, topic, callback = (
            form.get(f"hub.{key}", "") for key in ("mode", "topic", "callback")
        )
        if mode not in ("subscribe", "unsubscribe") or not topic or not callback:
            return 400, "hub.mode, hub.topic and hub.callback are required"
        with self.lock:
            self.events.append(Event("request", mode, topic, callback))
        secret = form.get("hub.secret", "")
        if secret:
            with self.lock:
                self.secrets.append(secret)
        threading.Thread(
            target=self._verify, args=(mode, topic, callback, secret), daemon=True
        ).start()
        return 202, "Accepted"

    def _verify(self, mode: str, topic: str, callback: str, secret: str) -> None:
        time.sleep(self.delay)  # after our 202, as hubs do
        challenge = secrets.token_urlsafe(16)
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(self.lease_seconds)
        try:
            response = httpx.get(callback, params=params, timeout=10)
            ok = response.status_code // 100 == 2 and response.text == challenge
            detail = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, str(exc)
        with self.lock:
            self.events.append(
                Event("verified" if ok else "refused", mode, topic, callback, detail=detail)
            )
            if not ok:
                return
            if mode == "subscribe":
                self.subscriptions[(topic, callback)] = Subscription(
                    topic, callback, secret, time.time() + self.lease_seconds
                )
            else:
                self.subscriptions.pop((topic, callback), None)

    def seen(self, kind: str, mode: str, topic: str | None = None) -> list[Event]:
        with self.lock:
            return [
                event
                for event in self.events
                if event.kind == kind and event.mode == mode and topic in (None, event.topic)
            ]

    def publish(self, topic: str, body: bytes, *, content_type: str) -> list[int]:
        """Distribute ``body`` to the live subscribers of ``topic``; their HTTP statuses."""
        with self.lock:
            live = [
                sub
                for sub in self.subscriptions.values()
                if sub.topic == topic and sub.expires > time.time()
            ]
        statuses = []
        for sub in live:
            signature = hmac.new(sub.secret.encode(), body, hashlib.sha256).hexdigest()
            response = httpx.post(
                sub.callback,
                content=body,
                headers={
                    "Content-Type": content_type,
                    "X-Hub-Signature": f"sha256={signature}",
                    "Link": f'<{self.url}>; rel="hub", <{topic}>; rel="self"',
                },
                timeout=30,
            )
            statuses.append(response.status_code)
        return statuses
