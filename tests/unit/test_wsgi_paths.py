"""The utf8paths WSGI filter: a non-UTF-8 URL path is a JSON 400, not ZPublisher's 500."""

import json

from collective.plonecelery.restapi.wsgi import UTF8Paths
from collective.plonecelery.restapi.wsgi import filter_factory


def call(app, path):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "POST"}, start_response))
    return seen["status"], seen["headers"], body


def inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"zope"]


def test_undecodable_path_is_a_json_400():
    # PEP 3333: PATH_INFO is the raw bytes as latin-1 text ('%C0%AE' -> '\xc0\xae').
    status, headers, body = call(UTF8Paths(inner), "/plone/@blog-webhook/\xc0\xae\xc0\xae")
    assert status == "400 Bad Request"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["type"] == "BadRequest"
    assert headers["Content-Length"] == str(len(body))


def test_utf8_paths_pass_through():
    assert call(UTF8Paths(inner), "/plone/caf\xc3\xa9")[2] == b"zope"
    assert call(UTF8Paths(inner), "/plone/@blog-webhook/src")[2] == b"zope"


def test_paste_entry_point_builds_the_filter():
    from importlib.metadata import entry_points

    [point] = [e for e in entry_points(group="paste.filter_factory") if e.name == "utf8paths"]
    assert point.load() is filter_factory
    assert isinstance(filter_factory({})(inner), UTF8Paths)
