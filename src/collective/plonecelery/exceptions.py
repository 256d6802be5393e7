"""Every error collective.plonecelery raises, under one base class.

Catch :class:`PloneCeleryError` to handle them all::

    from collective.plonecelery.exceptions import PloneCeleryError

    try:
        importer.queue_import(config, remote_id="42", action="upsert")
    except PloneCeleryError as exc:
        logger.warning("not queued: %s", exc)

Each class also keeps the built-in base it always had (``ValueError``, ``KeyError``,
``LookupError``), so code catching those goes on working.
"""

from __future__ import annotations


class PloneCeleryError(Exception):
    """Base class of the add-on's errors."""


# -- configuration and tasks ------------------------------------------------------


class ConfigurationError(PloneCeleryError, ValueError):
    """A setting could not be parsed. The message names the variable."""


class UnknownUser(PloneCeleryError, LookupError):
    """The user a task should run as does not exist (any more)."""


class UnresolvedReference(PloneCeleryError, LookupError):
    """A content reference no longer points to an object (moved or deleted)."""


# -- blog sources -------------------------------------------------------------------


class UnknownSource(PloneCeleryError, KeyError):
    """No source has this id."""

    def __init__(self, source_id: str):
        super().__init__(source_id)
        self.source_id = source_id

    def __str__(self) -> str:
        return (
            f"there is no blog source with id {self.source_id!r}; list them with GET @blog-sources"
        )


REASONS = ("missing", "invalid", "stale", "malformed")


class SignatureError(PloneCeleryError):
    """A webhook failed verification.

    ``reason`` is one of ``'missing'``, ``'invalid'``, ``'stale'``, ``'malformed'``; ``message``
    is human-readable text and never contains the secret or the expected signature.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown SignatureError reason {reason!r}; use one of {REASONS}")
        super().__init__(message)
        self.reason = reason
        self.message = message


class MalformedPayload(PloneCeleryError, ValueError):
    """The body is not a notification of the source's platform."""


class FetchError(PloneCeleryError):
    """Reading from the blog failed.

    ``retryable`` says whether trying again later may succeed (network trouble, 5xx, 429);
    ``retry_after`` is the delay in seconds the server asked for, if any; ``status`` the HTTP
    status, if a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class PostGone(PloneCeleryError):
    """The API answered 404/410 for the post: treat it as unpublished or deleted."""

    def __init__(self, message: str, *, status: int = 404):
        super().__init__(message)
        self.status = status


class ImportFailed(PloneCeleryError):
    """Reading the blog failed for good (after the retries, or at once for a 4xx).

    Carries the API's message; a plain one-argument exception so that result backends can
    store and rebuild it.
    """


# -- HTTP -----------------------------------------------------------------------------


class ServiceError(PloneCeleryError):
    """A request the REST API or the webhook endpoint refuses.

    Answered with ``status`` and the JSON body ``{"type": type, "message": message}``.
    """

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
