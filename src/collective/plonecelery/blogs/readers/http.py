"""GET a URL from a blog without letting the blog (or a forged webhook) steer us elsewhere.

Usage::

    from collective.plonecelery.blogs.readers.http import fetch

    response = fetch("https://blog.example.org/ghost/api/content/posts/?key=...",
                     allowed_hosts={"blog.example.org"})
    response.json()

Guards (all failures raise :class:`~collective.plonecelery.blogs.readers.remote.FetchError` or
:class:`~collective.plonecelery.blogs.readers.remote.PostGone`):

* only http(s) URLs without credentials, on an allowed origin: ``allowed_hosts`` lists
  origins (``https://blog.example.org:8443``: exactly that scheme, host and port) or bare host
  names (``cdn.example.org``: http on port 80 or https on port 443 only);
* the host is resolved once, every address must be public (unless ``allow_private``), and the
  connection goes to a vetted address (TLS still verifies the host name), so DNS rebinding between
  check and connect cannot reach an internal service;
* at most 3 redirects, each hop re-checked; credentials are dropped when the host changes;
* bodies are streamed and refused past ``max_bytes`` (after content decoding);
* status codes map to retryable / permanent errors, 404 and 410 to ``PostGone``.

When no ``client`` is given a fresh one is used that ignores proxy environment variables (the
vetted address must be the one we connect to); pass a client to use a proxy or custom TLS.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
import socket
from collections.abc import Collection
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote
from urllib.parse import quote_plus
from urllib.parse import urlencode

import httpx

from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

USER_AGENT = "collective.plonecelery (blog import)"
DEFAULT_TIMEOUT = httpx.Timeout(10, connect=5)
MAX_REDIRECTS = 3
_REDIRECTS = {301, 302, 303, 307, 308}
_CREDENTIAL_HEADERS = ("authorization", "cookie")
# Headers describing the wire encoding; the returned response carries the decoded body.
_WIRE_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_QUERY = re.compile(r"\?[^\s\"']*")


class RedactQueryStrings(logging.Filter):
    """Remove query strings (Ghost's ``?key=<Content API key>``) from httpx's log records.

    httpx logs every request at INFO (``HTTP Request: GET http://...?key=... "HTTP/1.1 200
    OK"``), past the redaction of our own messages. Installed on the ``httpx`` and ``httpcore``
    loggers when this module is imported; it changes records, it never drops them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_redact_log_value(arg) for arg in args)
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = _QUERY.sub("?<redacted>", record.msg)
        return True


def _redact_log_value(value: object) -> object:
    if isinstance(value, httpx.URL):
        return _redacted(value)
    if isinstance(value, str | bytes) and ("?" in str(value)):
        return _QUERY.sub(
            "?<redacted>", value if isinstance(value, str) else value.decode("latin-1")
        )
    return value


for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, RedactQueryStrings) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(RedactQueryStrings())


def fetch(
    url: str,
    *,
    allowed_hosts: Collection[str],
    allow_private: bool = False,
    max_bytes: int = 5_000_000,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """GET ``url`` under the guards described in the module docstring and return the 2xx response.

    With ``If-None-Match`` or ``If-Modified-Since`` among ``headers`` a 304 is returned too.

    The returned response is fully read (``.content``, ``.json()``, ``.headers`` work) and its
    ``.url`` is the final URL, with the host name (not the address connected to).
    """
    allowed = set(allowed_hosts)
    request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    own_client = client is None
    if own_client:
        client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
    hidden: set[str] = set()
    try:
        current = _parse_url(url)
        hidden = secret_values(current, request_headers)
        return _fetch_hops(
            client,
            current,
            allowed=allowed,
            allow_private=allow_private,
            headers=request_headers,
            timeout=timeout,
            max_bytes=max_bytes,
        )
    except (FetchError, PostGone) as exc:
        # A blog may echo the request (and its ?key=) into an error message, or a header we
        # quote: what we raise goes to logs, dead letters and the delivery log.
        exc.args = (redact(str(exc), hidden),)
        raise
    finally:
        if own_client:
            client.close()


def _fetch_hops(
    client: httpx.Client,
    current: httpx.URL,
    *,
    allowed: set[str],
    allow_private: bool,
    headers: dict[str, str],
    timeout: httpx.Timeout,
    max_bytes: int,
) -> httpx.Response:
    request_headers = dict(headers)
    for _hop in range(MAX_REDIRECTS + 1):
        addresses = vet_url(current, allowed_hosts=allowed, allow_private=allow_private)
        response = _get_pinned(
            client,
            current,
            addresses=addresses,
            headers=request_headers,
            timeout=timeout,
            max_bytes=max_bytes,
        )
        location = response.headers.get("location")
        if response.status_code == 304 and _is_conditional(request_headers):
            return response  # the caller asked "unless unchanged": 304 is its answer
        if response.status_code not in _REDIRECTS or not location:
            _raise_for_status(response, url=current)
            return response
        target = _parse_url(str(current.join(location)))
        if _leaves_origin(current, target):
            request_headers = {
                k: v for k, v in request_headers.items() if k.lower() not in _CREDENTIAL_HEADERS
            }
        current = target
    raise FetchError(
        f"{_redacted(current)} redirected more than {MAX_REDIRECTS} times; "
        "use the final URL in the configuration",
        retryable=False,
    )


def post_form(
    url: str,
    *,
    data: Mapping[str, str],
    allow_private: bool = False,
    hidden: Collection[str] = (),
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    max_bytes: int = 65_536,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST ``data`` form-encoded to ``url`` (a WebSub hub) and return its 2xx response.

    The guards of :func:`fetch` apply to ``url``'s own origin (private addresses only with
    ``allow_private``); redirects are not followed (a 3xx is an error). ``hidden``: values
    sent in the body (the subscription's secret) that must not appear in what is raised.
    """
    own_client = client is None
    if own_client:
        client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
    secrets = {value for value in hidden if value}
    try:
        target = _parse_url(url)
        addresses = vet_url(target, allowed_hosts=(_origin(target),), allow_private=allow_private)
        response = _get_pinned(
            client,
            target,
            addresses=addresses,
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=timeout,
            max_bytes=max_bytes,
            method="POST",
            content=urlencode(dict(data)).encode("ascii"),
        )
        if response.status_code in _REDIRECTS:
            raise FetchError(
                f"{_redacted(target)} answered HTTP {response.status_code} (a redirect): "
                "give the hub's final URL",
                retryable=False,
                status=response.status_code,
            )
        try:
            _raise_for_status(response, url=target)
        except PostGone as exc:
            raise FetchError(str(exc), retryable=False, status=exc.status) from None
        return response
    except FetchError as exc:
        exc.args = (redact(str(exc), secrets),)
        raise
    finally:
        if own_client:
            client.close()


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii').rpartition('@')[2]}"


def _is_conditional(headers: Mapping[str, str]) -> bool:
    return any(name.lower() in ("if-none-match", "if-modified-since") for name in headers)


#: Query parameters whose values are credentials (Ghost's ``?key=``, tokens, signatures).
_SECRET_PARAMS = re.compile(r"key|token|secret|pass|auth|sig", re.IGNORECASE)


def secret_values(url: httpx.URL, headers: Mapping[str, str]) -> set[str]:
    """The credentials a request carries (query ``key``s, Authorization), in their spellings.

    >>> sorted(secret_values(httpx.URL("https://b.example/?key=k3y%2Fx&limit=1"), {}))
    ['k3y%2Fx', 'k3y/x']
    """
    values = {v for name, v in url.params.multi_items() if _SECRET_PARAMS.search(name)}
    for name, value in headers.items():
        if name.lower() not in _CREDENTIAL_HEADERS:
            continue
        scheme, _, token = value.partition(" ")
        values |= {value, token}
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(token, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
            values |= {decoded, decoded.partition(":")[2]}
    spelled = set()
    for value in values:
        if len(value) >= 4:  # never redact short, common words
            spelled |= {value, quote(value, safe=""), quote_plus(value)}
    return spelled


def redact(text: str, values: Collection[str]) -> str:
    """``text`` with each of ``values`` replaced by ``<redacted>`` (longest first)."""
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text


def vet_url(
    url: httpx.URL | str, *, allowed_hosts: Collection[str], allow_private: bool = False
) -> list[str]:
    """Check ``url`` against the guards and return the IP addresses it may be fetched from.

    Raises ``FetchError`` (not retryable) when the URL is refused, retryable when DNS fails.
    """
    if isinstance(allowed_hosts, str):
        raise TypeError("allowed_hosts must be a collection of host names, not one string")
    url = _parse_url(url) if isinstance(url, str) else url
    allowed = _allowed_origins(allowed_hosts)
    host = _normal_host(url.host)
    port = url.port or _DEFAULT_PORTS[url.scheme]
    origins = {(url.scheme, name, port) for name in (host, _normal_host(url.raw_host.decode()))}
    if not origins & allowed:
        shown = sorted(f"{scheme}://{name}:{number}" for scheme, name, number in allowed)
        raise FetchError(
            f"refusing {_redacted(url)}: origin {url.scheme}://{host}:{port} is not allowed for "
            f"this source (allowed: {', '.join(shown) or 'none'}); "
            "add the host to the source's CDN hosts if it is trusted",
            retryable=False,
        )
    addresses = _resolve(url)
    if not allow_private:
        for address in addresses:
            if _is_internal(ipaddress.ip_address(address)):
                raise FetchError(
                    f"refusing {_redacted(url)}: {host!r} resolves to the non-public "
                    f"address {address} "
                    "(enable allow_private only for a blog on your own network)",
                    retryable=False,
                )
    return addresses


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header (delay in seconds, or an HTTP date) into seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def json_body(response: httpx.Response) -> object:
    """Return the decoded JSON of a :func:`fetch` response; ``FetchError`` when it is not JSON."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise FetchError(
            f"{_redacted(response.url)} did not answer JSON "
            f"(Content-Type {response.headers.get('content-type')!r}); "
            "check that api_url is the site's root URL",
            retryable=False,
            status=response.status_code,
        ) from None


def _leaves_origin(current: httpx.URL, target: httpx.URL) -> bool:
    """True when a redirect changes host/port or downgrades https: credentials must go."""
    downgrade = current.scheme == "https" and target.scheme != "https"
    return downgrade or (target.host, target.port) != (current.host, current.port)


def _allowed_origins(entries: Collection[str]) -> set[tuple[str, str, int]]:
    """``(scheme, host, port)`` triples: origins as given, bare host names on default ports."""
    origins = set()
    for entry in entries:
        if "://" in entry:
            url = httpx.URL(entry)
            origins.add(
                (url.scheme, _normal_host(url.host), url.port or _DEFAULT_PORTS[url.scheme])
            )
        else:
            origins.update(
                (scheme, _normal_host(entry), port) for scheme, port in _DEFAULT_PORTS.items()
            )
    return origins


def _normal_host(host: str) -> str:
    """Lower-case host name, or an IP's canonical text ('::ffff:10.0.0.1' -> '::ffff:a00:1')."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError(f"invalid URL: {exc}", retryable=False) from None
    if parsed.scheme not in ("http", "https"):
        raise FetchError(
            f"refusing {parsed.scheme!r} URL {_redacted(parsed)}: only http and https",
            retryable=False,
        )
    if not parsed.host:
        raise FetchError(f"refusing URL without a host: {_redacted(parsed)}", retryable=False)
    if parsed.userinfo:
        # httpx would send them as 'Authorization: Basic': a blog's HTML must not choose that.
        raise FetchError(
            f"refusing {_redacted(parsed)}: URLs with credentials (user:password@) are not fetched",
            retryable=False,
        )
    return parsed


def _redacted(url: httpx.URL) -> str:
    # Query strings carry API keys (Ghost's ?key=): keep them out of messages and logs.
    return str(url.copy_with(query=None, fragment=None, userinfo=b""))


def _resolve(url: httpx.URL) -> list[str]:
    host = url.raw_host.decode("ascii")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc}", retryable=True) from None
    # Strip IPv6 zone ids ('fe80::1%eth0'): the address itself is what gets checked.
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
    if not addresses:
        raise FetchError(f"{host!r} resolves to no address", retryable=True)
    return list(dict.fromkeys(addresses))


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def _get_pinned(
    client: httpx.Client,
    url: httpx.URL,
    *,
    addresses: list[str],
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    max_bytes: int,
    method: str = "GET",
    content: bytes | None = None,
) -> httpx.Response:
    """GET (or ``method``) ``url`` by connecting to one of the vetted ``addresses``; return the
    read response."""
    pinned_headers = {**headers, "Host": url.netloc.decode("ascii")}
    # TLS must still check the certificate against the host name, not the address.
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    last_error: Exception | None = None
    for address in addresses:
        request = client.build_request(
            method,
            url.copy_with(host=address),
            headers=pinned_headers,
            content=content,
            timeout=timeout,
            extensions=extensions,
        )
        try:
            streamed = client.send(request, stream=True, follow_redirects=False)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last_error = exc  # try the host's next address
            continue
        except (httpx.RemoteProtocolError, httpx.InvalidURL) as exc:
            if isinstance(exc, httpx.RemoteProtocolError) and "location" not in str(exc).lower():
                raise _network_error(url, exc) from None
            # httpx parses a redirect's Location even when not following it, and raises
            # (InvalidURL is no TransportError) on one it cannot parse: the blog's permanent
            # mistake, neither a network error to retry nor a crash of the import.
            raise FetchError(
                f"refusing the redirect of {_redacted(url)}: invalid URL in Location ({exc})",
                retryable=False,
            ) from None
        except httpx.TransportError as exc:
            raise _network_error(url, exc) from None
        try:
            body = _read_limited(streamed, url=url, max_bytes=max_bytes)
        finally:
            streamed.close()
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
        return httpx.Response(
            streamed.status_code,
            headers=kept,
            content=body,
            request=httpx.Request(method, url, headers=headers),
        )
    raise _network_error(url, last_error)


def _network_error(url: httpx.URL, exc: Exception | None) -> FetchError:
    return FetchError(f"network error while fetching {_redacted(url)}: {exc!r}", retryable=True)


def _read_limited(response: httpx.Response, *, url: httpx.URL, max_bytes: int) -> bytes:
    too_big = FetchError(
        f"{_redacted(url)} sent more than {max_bytes} bytes; refusing the response", retryable=False
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise too_big
            chunks.append(chunk)
    except httpx.DecodingError as exc:
        raise FetchError(
            f"{_redacted(url)} sent an undecodable body: {exc}", retryable=False
        ) from None
    except httpx.TransportError as exc:
        raise _network_error(url, exc) from None
    return b"".join(chunks)


def _raise_for_status(response: httpx.Response, *, url: httpx.URL) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    where = f"{_redacted(url)} answered HTTP {status}"
    detail = _api_message(response)
    message = f"{where}: {detail}" if detail else where
    if status in (404, 410):
        raise PostGone(message, status=status)
    if status in (408, 429) or status >= 500:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise FetchError(message, retryable=True, retry_after=retry_after, status=status)
    raise FetchError(message, retryable=False, status=status)


def _api_message(response: httpx.Response) -> str:
    """The error text Ghost (``errors[0].message``) or WordPress (``message``) put in the body."""
    try:
        data = json.loads(response.content)
    except ValueError:
        return ""
    message = None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = errors[0].get("message")
        message = message or data.get("message") or data.get("error")
    if not isinstance(message, str):
        return ""
    return " ".join(message.split())[:300]
