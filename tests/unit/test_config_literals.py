"""Settings written the collective.celery way: Python literals as well as JSON and comma lists."""

from __future__ import annotations

import logging

import pytest

from collective.plonecelery.config import parse_setting
from collective.plonecelery.config import settings_from_environ
from collective.plonecelery.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("variable", "value", "name", "expected"),
    [
        ("CELERY_ACCEPT_CONTENT", "['json']", "accept_content", ["json"]),
        ("CELERY_ACCEPT_CONTENT", "('json', 'auth')", "accept_content", ["json", "auth"]),
        ("CELERY_ACCEPT_CONTENT", " [ 'json' , ] ", "accept_content", ["json"]),
        ("CELERY_ACCEPT_CONTENT", '["json"]', "accept_content", ["json"]),
        ("CELERY_ACCEPT_CONTENT", "json", "accept_content", ["json"]),
        ("CELERY_ACCEPT_CONTENT", "json, auth", "accept_content", ["json", "auth"]),
        ("CELERY_IMPORTS", "('my.addon.tasks',)", "imports", ("my.addon.tasks",)),
        ("CELERY_IMPORTS", "['a.tasks', 'b.tasks']", "imports", ("a.tasks", "b.tasks")),
        (
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            "{'visibility_timeout': 7200, 'fanout_prefix': True}",
            "broker_transport_options",
            {"visibility_timeout": 7200, "fanout_prefix": True},
        ),
        (
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            '{"visibility_timeout": 7200}',
            "broker_transport_options",
            {"visibility_timeout": 7200},
        ),
        (
            "CELERY_TASK_ROUTES",
            "{'my.addon.tasks.*': {'queue': 'slow'}}",
            "task_routes",
            {"my.addon.tasks.*": {"queue": "slow"}},
        ),
        ("CELERY_TASK_ROUTES", "my.addon.routes.Router", "task_routes", "my.addon.routes.Router"),
        ("CELERY_TASK_ALWAYS_EAGER", "True", "task_always_eager", True),
        ("CELERY_WORKER_CONCURRENCY", "4", "worker_concurrency", 4),
    ],
)
def test_python_literals_json_and_comma_lists(variable, value, name, expected):
    assert parse_setting(variable, value) == (name, expected)


def test_collective_celery_style_environment_is_read():
    settings = settings_from_environ(
        {
            "CELERY_ACCEPT_CONTENT": "['json']",
            "CELERY_RESULT_ACCEPT_CONTENT": "('json',)",
            "CELERY_TASK_SERIALIZER": "json",
            "CELERY_IMPORTS": "('my.addon.tasks',)",
        }
    )
    assert settings["accept_content"] == ["json"]
    assert settings["result_accept_content"] == ["json"]
    assert settings["imports"] == ("my.addon.tasks",)


def test_tls_options_as_python_dict():
    import ssl

    name, value = parse_setting("CELERY_BROKER_USE_SSL", "{'cert_reqs': 'CERT_REQUIRED'}")
    assert (name, value) == ("broker_use_ssl", {"cert_reqs": ssl.CERT_REQUIRED})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CELERY_ACCEPT_CONTENT", "['json'"),
        ("CELERY_ACCEPT_CONTENT", "(1 + 2)"),
        ("CELERY_ACCEPT_CONTENT", "[__import__('os')]"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", "{'a': 1"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", "['a']"),
    ],
)
def test_bad_literals_fail_naming_the_variable(variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        settings_from_environ({variable: value})


def test_pickle_is_refused_as_a_python_literal_too():
    with pytest.raises(ConfigurationError, match="pickle"):
        settings_from_environ({"CELERY_ACCEPT_CONTENT": "['json', 'pickle']"})


def test_literal_values_log_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="collective.plonecelery"):
        settings_from_environ({"CELERY_ACCEPT_CONTENT": "['json']"})
    assert caplog.text == ""
