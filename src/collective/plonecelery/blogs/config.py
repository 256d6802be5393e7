"""Configuration of one blog source: where to read posts, how webhooks are signed, where posts land.

Usage::

    from collective.plonecelery.blogs.config import SourceConfig

    config = SourceConfig.from_dict(stored)   # type-checks, ignores unknown keys
    config.validate()                         # ValueError with a message saying what to fix
    config.to_dict()                          # secrets shown as {"set": True/False}
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from collective.plonecelery.blogs.verify.signatures import RENAMEABLE_HEADER_SCHEMES
from collective.plonecelery.blogs.verify.signatures import SCHEMES

KINDS = ("ghost", "wordpress", "feed")
ON_REMOVE = ("retract", "delete")
VOLTO_BLOCKS = ("auto", "on", "off")
SECRET_FIELDS = ("secret", "api_key", "app_password")
#: Upper bound of ``sync_max_posts``: a scheduled run stays a few pages of the API.
MAX_SYNC_POSTS = 500

_ID = re.compile(r"[a-z0-9_-]{1,64}")
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


@dataclass
class SourceConfig:
    """One blog source.

    Secrets (``secret``, ``api_key``, ``app_password``) never leave via :meth:`to_dict`.
    """

    id: str
    title: str
    kind: str  # 'ghost' | 'wordpress' | 'feed'
    api_url: str  # site root for ghost/wordpress, the feed URL for feed
    api_key: str = ""  # Ghost Content API key
    username: str = ""  # WordPress user for an application password (optional)
    app_password: str = ""
    scheme: str = "standard-webhooks"  # webhook signature scheme, see signatures.SCHEMES
    secret: str = ""  # webhook signing secret
    header_name: str = ""  # signature header override (hmac-sha256-base64, websub, github)
    # True allows unsigned webhooks (scheme 'none') and credentials over plain http.
    insecure: bool = False
    target: str = ""  # folder path or UID where posts are created
    portal_type: str = "News Item"
    import_user: str = "plonecelery-importer"
    transition: str = "publish"
    on_remove: str = "retract"  # 'retract' | 'delete'
    cdn_hosts: tuple[str, ...] = ()  # extra hosts images may be fetched from
    allow_private: bool = False  # allow fetching from private/loopback addresses (local test blogs)
    iframe_hosts: tuple[str, ...] = ("www.youtube.com", "player.vimeo.com")
    tolerance: int = 300  # seconds a signed webhook timestamp may be off
    # Volto blocks for imported posts: 'auto' (when plone.volto is installed), 'on' or 'off'.
    volto_blocks: str = "auto"
    # Scheduled re-sync (see blogs/schedule.py): read the newest posts every sync_hours and
    # import what webhooks missed; feeds are polled every poll_minutes. 0 turns either off.
    sync_hours: float = 0.0
    poll_minutes: float = 0.0
    sync_max_posts: int = 30  # most posts one scheduled run looks at (newest first)
    # Ghost only: import pages too (page.* webhooks), as page_portal_type items.
    ghost_pages: bool = False
    page_portal_type: str = "Document"
    # Feeds only: the add-on subscribes to the feed's WebSub hub itself (see blogs/websub.py),
    # with a random secret of its own; hub_url overrides the hub the feed announces.
    websub: bool = False
    hub_url: str = ""

    @property
    def api_host(self) -> str:
        """Lower-case host name of ``api_url`` (no port)."""
        return (urlsplit(self.api_url).hostname or "").lower()

    @property
    def api_origin(self) -> str:
        """``scheme://host:port`` of ``api_url`` (the port made explicit)."""
        parts = urlsplit(self.api_url)
        if not parts.hostname:
            return ""
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host.lower()}:{port}"

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """Where fetches may go (see ``sources.http.fetch``): the API's origin (scheme, host and
        port: no other port of the blog's host), plus the CDN hosts on their default ports."""
        hosts = [self.api_origin, *(host.lower() for host in self.cdn_hosts)]
        return tuple(dict.fromkeys(host for host in hosts if host))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first problem found; return ``None`` if usable."""
        if not _ID.fullmatch(self.id or ""):
            raise ValueError(
                f"source id {self.id!r} must be 1-64 characters of a-z, 0-9, '-' or '_' "
                "(it appears in webhook URLs)"
            )
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        self._validate_url()
        self._validate_webhook()
        self._validate_credentials()
        if self.on_remove not in ON_REMOVE:
            raise ValueError(
                f"on_remove must be one of {', '.join(ON_REMOVE)}, not {self.on_remove!r}"
            )
        if self.volto_blocks not in VOLTO_BLOCKS:
            raise ValueError(
                f"volto_blocks must be one of {', '.join(VOLTO_BLOCKS)}, not {self.volto_blocks!r}"
            )
        self._validate_schedule()
        self._validate_websub()
        if self.ghost_pages and self.kind != "ghost":
            raise ValueError(f"ghost_pages applies to Ghost sources only, not {self.kind}")
        if self.ghost_pages and not self.page_portal_type:
            raise ValueError("page_portal_type is empty: name the type for pages, e.g. 'Document'")
        if not self.portal_type:
            raise ValueError(
                "portal_type is empty: name the content type to create, e.g. 'News Item'"
            )
        if self.tolerance <= 0:
            raise ValueError(
                f"tolerance must be a positive number of seconds, not {self.tolerance}"
            )
        for field in ("cdn_hosts", "iframe_hosts"):
            for host in getattr(self, field):
                if not (_is_host(host) or (field == "cdn_hosts" and _is_origin(host))):
                    raise ValueError(
                        f"{field}: {host!r} is not a bare host name or IP (no scheme, port or path)"
                        + (
                            ", or an origin such as https://cdn.example.org:8443"
                            if field == "cdn_hosts"
                            else ""
                        )
                    )

    @property
    def sync_interval(self) -> float:
        """Seconds between two scheduled runs (0: none): a feed's ``poll_minutes`` wins."""
        if self.kind == "feed" and self.poll_minutes > 0:
            return self.poll_minutes * 60.0
        return self.sync_hours * 3600.0

    def _validate_schedule(self) -> None:
        for name in ("sync_hours", "poll_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must be 0 (off) or a positive number, not {getattr(self, name)}"
                )
        if self.poll_minutes and self.kind != "feed":
            raise ValueError(
                f"poll_minutes applies to feed sources only; use sync_hours for {self.kind} sources"
            )
        if not 1 <= self.sync_max_posts <= MAX_SYNC_POSTS:
            raise ValueError(
                f"sync_max_posts must be between 1 and {MAX_SYNC_POSTS}, not {self.sync_max_posts}"
            )

    def _validate_websub(self) -> None:
        if self.hub_url and not self.websub:
            raise ValueError("hub_url is only used with websub: turn websub on, or clear hub_url")
        if not self.websub:
            return
        if self.kind != "feed":
            raise ValueError(f"websub applies to feed sources only, not {self.kind}")
        if self.scheme != "websub":
            raise ValueError(
                "a source that subscribes to a WebSub hub verifies the hub's notifications: "
                f"set scheme to 'websub', not {self.scheme!r}"
            )
        if self.hub_url:
            parts = urlsplit(self.hub_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"hub_url {self.hub_url!r} must be an absolute http(s) URL, "
                    "e.g. https://pubsubhubbub.appspot.com/ (or empty: the feed's own hub)"
                )
            if parts.username or parts.password:
                raise ValueError("hub_url must not contain credentials")

    def _validate_url(self) -> None:
        parts = urlsplit(self.api_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"api_url {self.api_url!r} must be an absolute http(s) URL, e.g. https://blog.example.org"
            )
        if parts.username or parts.password:
            raise ValueError(
                "api_url must not contain credentials; use username/app_password or api_key"
            )
        try:
            httpx.URL(self.api_url)
        except httpx.InvalidURL as exc:
            # urllib accepts what the fetcher cannot parse ('http://127.000.000.001/').
            raise ValueError(f"api_url {self.api_url!r} is not a valid URL: {exc}") from None

    def _validate_webhook(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(
                f"unknown webhook scheme {self.scheme!r}; valid schemes: {', '.join(SCHEMES)}"
            )
        if self.scheme == "none":
            if not self.insecure:
                raise ValueError(
                    "scheme 'none' accepts unsigned webhooks from anyone: "
                    "set insecure=True to allow it "
                    "(trusted networks only) or configure a signing secret"
                )
            return
        if not self.secret and not self.websub:
            # (A WebSub subscription of the add-on's own has a secret of its own.)
            raise ValueError(f"scheme {self.scheme!r} needs the webhook secret the blog signs with")
        if self.header_name and self.scheme not in RENAMEABLE_HEADER_SCHEMES:
            raise ValueError(
                f"header_name only applies to schemes {', '.join(RENAMEABLE_HEADER_SCHEMES)}; "
                f"clear it for {self.scheme!r}"
            )
        if self.scheme == "standard-webhooks" and not _is_base64_secret(self.secret):
            raise ValueError(
                "a standard-webhooks secret is base64, usually prefixed 'whsec_'; "
                "copy it from the sender"
            )

    def _validate_credentials(self) -> None:
        if self.kind == "ghost" and not self.api_key:
            raise ValueError(
                "Ghost sources need api_key: a Content API key (Ghost admin > Integrations)"
            )
        if bool(self.username) != bool(self.app_password):
            raise ValueError(
                "set both username and app_password (WordPress application password), or neither"
            )
        if self.app_password and urlsplit(self.api_url).scheme != "https" and not self.insecure:
            raise ValueError(
                "refusing to send app_password over plain http: "
                "use an https api_url (or insecure=True)"
            )

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """Return a JSON-ready dict; secrets become ``{"set": bool}`` unless ``include_secrets``."""
        data = dataclasses.asdict(self)
        for field in ("cdn_hosts", "iframe_hosts"):
            data[field] = list(data[field])
        if not include_secrets:
            for field in SECRET_FIELDS:
                data[field] = {"set": bool(data[field])}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceConfig:
        """Build a config from stored/submitted data, ignoring unknown keys.

        Raises ``ValueError`` on missing required keys or wrong value types; call :meth:`validate`
        for the semantic checks.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a source configuration must be a dict, not {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                if field.default is dataclasses.MISSING:
                    raise ValueError(f"source configuration is missing {field.name!r}")
                continue
            kwargs[field.name] = _coerce(field.name, data[field.name])
        return cls(**kwargs)


_BOOL_FIELDS = ("insecure", "allow_private", "ghost_pages", "websub")
_TUPLE_FIELDS = ("cdn_hosts", "iframe_hosts")


def _coerce(name: str, value: Any) -> Any:
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r:.40}")
        return value
    if name in ("tolerance", "sync_max_posts"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer number, not {value!r:.40}")
        return value
    if name in ("sync_hours", "poll_minutes"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError(f"{name} must be a number (0 turns it off), not {value!r:.40}")
        return float(value)
    if name in _TUPLE_FIELDS:
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{name} must be a list of host names")
        return tuple(item.strip() for item in value if item.strip())
    if name in SECRET_FIELDS and isinstance(value, dict):
        raise ValueError(
            f"{name} holds a redacted value ({{'set': ...}}); "
            "pass the real value or leave the key out"
        )
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    return value.strip() if name not in SECRET_FIELDS else value


def _is_origin(value: str) -> bool:
    """``http(s)://host[:port]`` and nothing more: a CDN on a port of its own."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and _is_host(parts.hostname)
        and parts.path in ("", "/")
        and not (parts.query or parts.fragment or parts.username or parts.password)
    )


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOST_NAME.fullmatch(value.lower()))
    return True


def _is_base64_secret(secret: str) -> bool:
    raw = secret.removeprefix("whsec_")
    try:
        return bool(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True))
    except binascii.Error:
        return False
