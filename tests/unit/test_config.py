"""Settings from the environment: names, types, defaults, errors."""

import logging

import pytest

from collective.plonecelery.config import DEFAULTS
from collective.plonecelery.config import addon_settings
from collective.plonecelery.config import parse_setting
from collective.plonecelery.config import settings_from_environ
from collective.plonecelery.exceptions import ConfigurationError


def test_safe_defaults_without_environment():
    settings = settings_from_environ({})
    assert settings["accept_content"] == ["json"]
    assert settings["task_serializer"] == "json"
    assert settings["task_acks_late"] is True
    assert settings["task_reject_on_worker_lost"] is True
    assert settings["worker_prefetch_multiplier"] == 1
    assert settings["broker_connection_retry_on_startup"] is True
    assert settings["broker_url"].startswith("sqla+sqlite:")


def test_defaults_are_not_shared_between_calls():
    first = settings_from_environ({})
    first["accept_content"].append("yaml")
    assert settings_from_environ({})["accept_content"] == ["json"]
    assert DEFAULTS["accept_content"] == ["json"]


@pytest.mark.parametrize(
    ("variable", "value", "name", "expected"),
    [
        ("CELERY_BROKER_URL", "redis://h:6379/1", "broker_url", "redis://h:6379/1"),
        ("CELERY_TASK_ALWAYS_EAGER", "true", "task_always_eager", True),
        ("CELERY_TASK_ALWAYS_EAGER", "0", "task_always_eager", False),
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", "4", "worker_prefetch_multiplier", 4),
        ("CELERY_TASK_TIME_LIMIT", "30.5", "task_time_limit", 30.5),
        ("CELERY_IMPORTS", "a.tasks, b.tasks", "imports", ("a.tasks", "b.tasks")),
        ("CELERY_ACCEPT_CONTENT", '["json", "auth"]', "accept_content", ["json", "auth"]),
        (
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            '{"visibility_timeout": 7200}',
            "broker_transport_options",
            {"visibility_timeout": 7200},
        ),
    ],
)
def test_settings_are_typed_by_celery_option_types(variable, value, name, expected):
    assert parse_setting(variable, value) == (name, expected)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", "many"),
        ("CELERY_TASK_ALWAYS_EAGER", "perhaps"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", "{not json"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", "[1, 2]"),
    ],
)
def test_unparseable_value_fails_naming_the_variable(variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        settings_from_environ({variable: value})


def test_unknown_celery_name_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="collective.plonecelery"):
        settings = settings_from_environ({"CELERY_ALWAYS_EAGER": "true"})
    assert "always_eager" not in settings
    assert "CELERY_ALWAYS_EAGER" in caplog.text


def test_celery_runtime_variables_are_not_settings(caplog):
    with caplog.at_level(logging.WARNING, logger="collective.plonecelery"):
        settings_from_environ({"CELERY_RDB_PORT": "6900", "CELERY_RDBSIG": "1"})
    assert caplog.text == ""


def test_pickle_is_refused():
    with pytest.raises(ConfigurationError, match="pickle"):
        settings_from_environ({"CELERY_ACCEPT_CONTENT": "json,pickle"})


def test_visibility_timeout_default_only_for_transports_that_have_one():
    redis = settings_from_environ({"CELERY_BROKER_URL": "redis://localhost:6379/0"})
    assert redis["broker_transport_options"] == {"visibility_timeout": 3600}
    kept = settings_from_environ(
        {
            "CELERY_BROKER_URL": "redis://localhost:6379/0",
            "CELERY_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 60}',
        }
    )
    assert kept["broker_transport_options"] == {"visibility_timeout": 60}
    # kombu's SQLAlchemy transport hands its options to create_engine().
    assert "broker_transport_options" not in settings_from_environ({})


def test_addon_settings():
    settings = addon_settings(
        {
            "PLONECELERY_SERVER_URL": "https://example.org",
            "PLONECELERY_CONFLICT_RETRIES": "7",
            "PLONECELERY_OUTBOX": "off",
            "PLONECELERY_OUTBOX_GRACE": "2.5",
        }
    )
    assert settings.server_url == "https://example.org"
    assert settings.conflict_retries == 7
    assert settings.outbox is False
    assert settings.outbox_grace == 2.5
    assert addon_settings({}).outbox is True


def test_addon_setting_parse_error_names_the_variable():
    with pytest.raises(ConfigurationError, match="PLONECELERY_CONFLICT_RETRIES"):
        addon_settings({"PLONECELERY_CONFLICT_RETRIES": "lots"})


def test_tls_options_as_json_with_ssl_constants():
    import ssl

    name, value = parse_setting(
        "CELERY_BROKER_USE_SSL", '{"cert_reqs": "CERT_REQUIRED", "ca_certs": "/etc/ca.pem"}'
    )
    assert name == "broker_use_ssl"
    assert value == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/etc/ca.pem"}
    assert parse_setting("CELERY_BROKER_USE_SSL", "true") == ("broker_use_ssl", True)


def test_pickle_results_are_refused_too():
    with pytest.raises(ConfigurationError, match="pickle"):
        settings_from_environ({"CELERY_RESULT_ACCEPT_CONTENT": "json,pickle"})


@pytest.mark.parametrize(
    "variable,value",
    [
        ("PLONECELERY_IMPORT_BACKOFF", "soon"),
        ("PLONECELERY_WEBHOOK_MAX_BYTES", "1MB"),
        ("PLONECELERY_WEBHOOK_MAX_BYTES", "-5"),
        ("PLONECELERY_DELIVERY_RETENTION_DAYS", "0"),
        ("PLONECELERY_DELIVERY_MAX_ENTRIES", "lots"),
    ],
)
def test_blog_settings_are_checked_with_the_others(variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        addon_settings({variable: value})


def test_blog_settings_defaults():
    settings = addon_settings({})
    assert settings.import_backoff == 30.0
    assert settings.webhook_max_bytes == 1024 * 1024
    assert settings.delivery_retention_days == 7.0
    assert settings.delivery_max_entries == 10_000
