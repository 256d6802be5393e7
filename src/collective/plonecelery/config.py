"""Celery settings read from the environment, with safe defaults.

Every ``CELERY_<NAME>`` variable names Celery's lower-case setting ``<name>``
(``CELERY_BROKER_URL`` -> ``broker_url``) and is typed by Celery's own option
table. Zope's ``<environment>`` section in ``zope.conf`` lands in ``os.environ``
before products load, so both sources are read the same way.

Our own settings use the ``PLONECELERY_`` prefix (see ``addon_settings``).
"""

from __future__ import annotations

import ast
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields

from .exceptions import ConfigurationError  # noqa: F401 - part of this module's API
from .internals import celery_options

logger = logging.getLogger(__name__)

PREFIX = "CELERY_"
#: Prefixes of the variables that configure Celery and the add-on.
ENVIRONMENT_PREFIXES = (PREFIX, "PLONECELERY_")

#: Variables with the CELERY_ prefix that Celery itself reads from the
#: environment (remote debugger, CLI); they are not settings, so no warning.
NOT_SETTINGS = frozenset(
    {
        "CELERY_RDB_HOST",
        "CELERY_RDB_PORT",
        "CELERY_RDBSIG",
        "CELERY_LOADER",
        "CELERY_CUSTOM_WORKER_POOL",
        "CELERY_TRACE_APP",
        "CELERY_BENCH",
        "CELERY_BENCH_EVERY",
        # Set by Celery's CLI for the processes it starts (app.log.setup, celery -C ...).
        "CELERY_LOG_FILE",
        "CELERY_LOG_LEVEL",
        "CELERY_LOG_REDIRECT",
        "CELERY_LOG_REDIRECT_LEVEL",
        "CELERY_CONFIG_MODULE",
        "CELERY_SKIP_CHECKS",
        # Read by celery.worker.state at import time.
        "CELERY_WORKER_REVOKES_MAX",
        "CELERY_WORKER_REVOKE_EXPIRES",
        "CELERY_WORKER_SUCCESSFUL_EXPIRES",
        "CELERY_WORKER_SUCCESSFUL_MAX",
    }
)

#: Our defaults: safe for a Plone site. Anything set in the environment wins.
DEFAULTS: dict[str, object] = {
    "broker_url": "sqla+sqlite:///var/celery-broker.sqlite",
    "result_backend": "db+sqlite:///var/celery-results.sqlite",
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "event_serializer": "json",
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
    "task_store_eager_result": True,
    # The outbox relay leaves alone what a worker has started.
    "task_track_started": True,
    "result_extended": True,
    "worker_hijack_root_logger": False,
    "enable_utc": True,
    "timezone": "UTC",
}

#: Redis and SQS redeliver unacknowledged messages after this many seconds,
#: even while a worker still runs them: keep it above the longest task.
#: (Only for those transports: kombu's SQLAlchemy transport hands its transport
#: options to ``create_engine``, which refuses unknown keywords.)
VISIBILITY_TIMEOUT = 3600
VISIBILITY_TIMEOUT_SCHEMES = ("redis", "rediss", "sentinel", "sqs")


def _literal(value: str) -> object:
    """JSON, or a Python literal as collective.celery took it (``['json']``, ``('a',)``)."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError("neither JSON nor a Python literal") from exc


def _parse_list(value: str) -> list:
    value = value.strip()
    if value.startswith(("[", "(")):
        parsed = _literal(value)
        if not isinstance(parsed, list | tuple):
            raise ValueError("expected a list")
        return list(parsed)
    return [item.strip() for item in value.split(",") if item.strip()]


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on", "y", "t"):
        return True
    if lowered in ("0", "false", "no", "off", "n", "f", ""):
        return False
    raise ValueError("expected true/false, yes/no, on/off or 1/0")


def _parse_dict(value: str) -> dict:
    parsed = _literal(value)
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object or a Python dict")
    return parsed


def _parse_any(value: str) -> object:
    # Values like task_routes may be JSON, a Python literal container, or a plain string.
    try:
        return json.loads(value)
    except ValueError:
        pass
    if value.lstrip().startswith(("[", "(", "{")):
        try:
            return _literal(value)
        except ValueError:
            pass
    return value


#: Bool-typed settings that also take a dict of TLS options (as JSON here).
TLS_SETTINGS = frozenset({"broker_use_ssl", "redis_backend_use_ssl"})


def _parse_tls(value: str) -> dict:
    """TLS options as JSON; ``CERT_REQUIRED``-style names become ssl constants."""
    import ssl

    options = _parse_dict(value)
    for key, item in options.items():
        if isinstance(item, str) and item.startswith("CERT_") and hasattr(ssl, item):
            options[key] = getattr(ssl, item)
    return options


PARSERS = {
    "string": str,
    "str": str,
    "int": int,
    int: int,
    "float": float,
    "bool": _parse_bool,
    "list": _parse_list,
    "tuple": lambda value: tuple(_parse_list(value)),
    "dict": _parse_dict,
    "any": _parse_any,
    "bytes": lambda value: value.encode("utf-8"),
}


def parse_setting(variable: str, value: str) -> tuple[str, object] | None:
    """Parse one ``CELERY_*`` variable into ``(setting_name, typed_value)``.

    Returns ``None`` (and logs a warning) for names Celery does not know.

    >>> parse_setting("CELERY_TASK_ALWAYS_EAGER", "true")
    ('task_always_eager', True)
    """
    name = variable[len(PREFIX) :].lower()
    option = celery_options().get(name)
    if option is None:
        logger.warning(
            "Ignoring %s: Celery has no setting named %r "
            "(use the new lower-case names, e.g. CELERY_BROKER_URL).",
            variable,
            name,
        )
        return None
    parser = PARSERS.get(option.type, str)
    if name in TLS_SETTINGS and value.lstrip().startswith("{"):
        # Celery types these as bool, but also takes a dict of TLS options.
        parser = _parse_tls
    try:
        return name, parser(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"Cannot parse {variable}={value!r} as {option.type}: {exc}"
        ) from exc


def settings_from_environ(environ: Mapping[str, str] | None = None) -> dict:
    """Our defaults updated with every ``CELERY_*`` variable of ``environ``.

    >>> settings_from_environ({"CELERY_BROKER_URL": "redis://localhost:6379/0"})["broker_url"]
    'redis://localhost:6379/0'
    """
    environ = os.environ if environ is None else environ
    settings = {
        key: (value.copy() if isinstance(value, (dict, list)) else value)
        for key, value in DEFAULTS.items()
    }
    for variable in sorted(environ):
        if not variable.startswith(PREFIX) or variable in NOT_SETTINGS:
            continue
        parsed = parse_setting(variable, environ[variable])
        if parsed is not None:
            name, value = parsed
            settings[name] = value
    scheme = str(settings.get("broker_url") or "").split(":", 1)[0]
    if scheme in VISIBILITY_TIMEOUT_SCHEMES:
        options = dict(settings.get("broker_transport_options") or {})
        options.setdefault("visibility_timeout", VISIBILITY_TIMEOUT)
        settings["broker_transport_options"] = options
    refuse_code_running_serializers(settings)
    return settings


def own_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``CELERY_*`` and ``PLONECELERY_*`` variables of ``environ``."""
    return {key: value for key, value in environ.items() if key.startswith(ENVIRONMENT_PREFIXES)}


def _positive(default):
    return field(default=default, metadata={"positive": True})


#: Serializers whose decoding can run code, by name and by content type.
CODE_RUNNING_SERIALIZERS = {
    "pickle": "pickle",
    "application/x-python-serialize": "pickle",
    "yaml": "yaml",
    "application/x-yaml": "yaml",
}


def refuse_code_running_serializers(settings: Mapping) -> None:
    """``ConfigurationError`` if any serializer setting names pickle or yaml (either way).

    Accepting pickle lets anyone who can write to the broker (or the result backend) run
    code in the worker, which has the whole ZODB at hand.
    """
    for name in ("accept_content", "result_accept_content"):
        for entry in settings.get(name) or ():
            found = CODE_RUNNING_SERIALIZERS.get(str(entry).strip().lower())
            if found:
                raise ConfigurationError(
                    f"CELERY_{name.upper()} must not contain {entry!r} ({found}): "
                    "collective.plonecelery only exchanges JSON (or signed 'auth') messages."
                )
    for name in ("task_serializer", "result_serializer", "event_serializer"):
        found = CODE_RUNNING_SERIALIZERS.get(str(settings.get(name) or "").strip().lower())
        if found:
            raise ConfigurationError(
                f"CELERY_{name.upper()}={settings[name]!r} ({found}) is refused: "
                "collective.plonecelery only exchanges JSON (or signed 'auth') messages."
            )


@dataclass(frozen=True)
class AddonSettings:
    """Settings of collective.plonecelery itself (``PLONECELERY_*``)."""

    #: Public URL of the site as seen by users, for absolute_url() in tasks.
    server_url: str = "http://localhost:8080"
    #: How many times a task is retried on ConflictError before it fails.
    conflict_retries: int = 5
    #: Base of the exponential back-off between conflict retries (seconds).
    conflict_backoff: float = 1.0
    #: Upper bound of one back-off delay (seconds).
    conflict_backoff_max: float = 60.0
    #: Keep a transactional outbox record for every queued task (see outbox.py).
    outbox: bool = True
    #: A record still pending this long after its last send is sent again.
    outbox_grace: float = 60.0
    #: How often each worker asks for a relay run (seconds; 0 turns it off).
    outbox_relay_interval: float = 15.0
    #: Finished records are kept this long, to recognise redelivered messages.
    outbox_retention: float = 86400.0
    #: A task a worker started, that no live worker process reports running for this
    #: long (seconds), is sent again; a worker process silent this long counts as gone.
    outbox_started_timeout: float = _positive(120.0)
    #: How often each worker process refreshes its presence record (seconds).
    worker_heartbeat: float = _positive(10.0)
    #: Bearer token a Prometheus scraper sends to ``@@plonecelery-metrics`` (empty: Managers
    #: only). A secret: never logged.
    metrics_token: str = field(default="", repr=False)
    #: Base of the exponential back-off between retries of a failed blog fetch (seconds).
    import_backoff: float = _positive(30.0)
    #: A 429/503 whose Retry-After is longer than this (seconds) pauses the blog source until
    #: then (Ghost blocks a key for an hour or more), instead of retrying into the block.
    import_pause_threshold: float = _positive(300.0)
    #: Largest webhook body accepted (bytes); larger ones are answered 413.
    webhook_max_bytes: int = _positive(1024 * 1024)
    #: Days the delivery log keeps an entry (duplicates are recognised that long).
    delivery_retention_days: float = _positive(7.0)
    #: Most entries the delivery log keeps; older ones are trimmed by a worker task.
    delivery_max_entries: int = _positive(10_000)
    #: Workers and instances refuse to start without message signing (docs/security.rst).
    require_signing: bool = False
    #: Seconds a repeat of a webhook that carries no delivery id or signed timestamp
    #: (hmac-sha256-base64, websub, github without X-GitHub-Delivery, none) counts as the
    #: sender's retry once its import has run; later it queues the import again.
    delivery_repeat_window: float = _positive(60.0)
    #: How often each worker asks for a run of the blog sources' schedule (seconds; 0 turns
    #: scheduled re-syncs and feed polling off). See blogs/importer/schedule.py.
    blog_schedule_interval: float = 60.0
    #: OpenTelemetry traces from request to task run, where opentelemetry-instrumentation-
    #: celery is installed (the ``tracing`` extra) and OpenTelemetry is configured; false
    #: turns them off even then. See tracing.py.
    tracing: bool = True
    #: The site's public URL as the Internet reaches it, path included (unlike
    #: ``server_url``), e.g. ``https://www.example.org`` for a site published at the domain's
    #: root: WebSub hubs call back ``<public_url>/@blog-webhook/<source>``. ``{site}`` in it
    #: stands for the site's id (several sites in one Zope). Empty: no WebSub subscriptions.
    public_url: str = ""


def addon_settings(environ: Mapping[str, str] | None = None) -> AddonSettings:
    """Read ``PLONECELERY_SERVER_URL``, ``PLONECELERY_CONFLICT_RETRIES``, ...

    >>> addon_settings({"PLONECELERY_CONFLICT_RETRIES": "2"}).conflict_retries
    2
    """
    environ = os.environ if environ is None else environ
    values = {}
    for setting in fields(AddonSettings):
        variable = "PLONECELERY_" + setting.name.upper()
        if not environ.get(variable):
            continue
        parse = _parse_bool if isinstance(setting.default, bool) else type(setting.default)
        try:
            value = parse(environ[variable])
        except ValueError as exc:
            raise ConfigurationError(
                f"Cannot parse {variable}={environ[variable]!r}: {exc}"
            ) from exc
        if setting.metadata.get("positive") and value <= 0:
            raise ConfigurationError(f"{variable}={environ[variable]!r} must be positive")
        values[setting.name] = value
    settings = AddonSettings(**values)
    if settings.outbox_started_timeout < 3 * settings.worker_heartbeat:
        raise ConfigurationError(
            f"PLONECELERY_OUTBOX_STARTED_TIMEOUT={settings.outbox_started_timeout:g} must be at "
            f"least three heartbeats (PLONECELERY_WORKER_HEARTBEAT={settings.worker_heartbeat:g}"
            "): a busy worker would otherwise be taken for a dead one and its tasks sent again."
        )
    return settings
