"""The OpenAPI description (restapi/openapi.yaml): complete, well formed, served as it is."""

from __future__ import annotations

import re
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import webtest
import yaml
from plone.testing._z2_testbrowser import Zope2Caller

from collective.plonecelery.restapi import openapi

ZCML = Path(openapi.__file__).with_name("configure.zcml")
PLONE = "{http://namespaces.plone.org/plone}"
BROWSER = "{http://namespaces.zope.org/browser}"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(openapi.DOCUMENT.read_text(encoding="utf-8"))


def registered() -> set[tuple[str, str]]:
    """(name, method) of every service and view restapi/configure.zcml registers; views as
    ``(name, "*")``."""
    root = ET.parse(ZCML).getroot()
    found = {(el.get("name"), el.get("method").lower()) for el in root.iter(f"{PLONE}service")}
    found |= {(el.get("name"), "*") for el in root.iter(f"{BROWSER}page")}
    return found


def described(spec: dict) -> dict[str, set[str]]:
    """Name (the path's first segment, without ``@@``) -> the methods described under it."""
    names: dict[str, set[str]] = {}
    for path, item in spec["paths"].items():
        name = path.split("/")[1].removeprefix("@@")
        names.setdefault(name, set()).update(m for m in METHODS if m in item)
    return names


def test_every_service_and_view_of_the_zcml_is_described(spec):
    services = registered()
    assert ("@celery-deadletters", "post") in services and ("@blog-webhook", "*") in services
    names = described(spec)
    missing = [
        (name, method)
        for name, method in sorted(services)
        if not names.get(name) or (method != "*" and method not in names[name])
    ]
    assert not missing, f"in configure.zcml but not in openapi.yaml: {missing}"
    extra = set(names) - {name for name, _ in services}
    assert not extra, f"in openapi.yaml but registered nowhere: {extra}"


def test_every_operation_documents_json_errors_and_its_security(spec):
    error = "#/components/schemas/Error"
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            where = f"{method.upper()} {path}"
            assert operation.get("operationId"), where
            public = operation.get("security") == []
            manager = operation.get("security", spec["security"])
            assert public or {"basicAuth": []} in manager, where
            if not public:
                assert "401" in operation["responses"], where
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or path == "/@@plonecelery-metrics":
                    continue
                if "$ref" in response:
                    response = spec["components"]["responses"][response["$ref"].split("/")[-1]]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": error}, f"{where} {status}"
    assert spec["components"]["schemas"]["Error"]["required"] == ["type", "message"]


def test_path_parameters_are_declared(spec):
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method in METHODS:
            if method not in item:
                continue
            declared = set()
            for parameter in item.get("parameters", []) + item[method].get("parameters", []):
                if "$ref" in parameter:
                    parameter = spec["components"]["parameters"][parameter["$ref"].split("/")[-1]]
                if parameter["in"] == "path":
                    declared.add(parameter["name"])
            assert declared == names, f"{method.upper()} {path}"


def test_schemathesis_loads_it(spec):
    import schemathesis

    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(
        1 for item in spec["paths"].values() for method in METHODS if method in item
    )


@pytest.mark.parametrize(
    "path", ["/plone/++api++/@plonecelery-openapi", "/plone/@plonecelery-openapi"]
)
def test_the_served_document_is_the_file(layers, portal, path):
    app = webtest.TestApp(Zope2Caller(types.SimpleNamespace(handleErrors=True), layers[-1]["app"]))
    response = app.get(path)  # anonymous, any Accept header
    assert response.status_int == 200
    assert response.headers["Content-Type"] == "application/yaml; charset=utf-8"
    assert response.body == openapi.DOCUMENT.read_bytes()
