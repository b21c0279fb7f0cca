"""The admin API's OpenAPI document: valid, and covering exactly the routes served."""

from __future__ import annotations

from typing import Any

import openapi_spec_validator
import pytest
from web_helpers import ADMIN_TOKEN, WEB_CODES, operations

from turnout import ModelServer
from turnout.web.admin import create_admin_app
from turnout.web.admin_openapi import admin_openapi_document
from turnout.web.errors import ERROR_CODES
from turnout.web.status_page import UI_PATHS

ADMIN_CODES = {"unauthorized": 401, "forbidden": 403}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return admin_openapi_document()


def test_the_document_is_valid_openapi_3_1(document) -> None:
    openapi_spec_validator.validate(document)


def _is_page(path: str) -> bool:
    return path in UI_PATHS or path.startswith("/ui/")


async def test_every_admin_route_is_documented_and_nothing_else(
    server: ModelServer, document
) -> None:
    app = create_admin_app(server, token=ADMIN_TOKEN)
    routes = {
        (resource.canonical, route.method)
        for resource in app.router.resources()
        for route in resource
        # The status page's files are a page for people, not part of the API.
        if route.method != "HEAD" and not _is_page(resource.canonical)
    }
    documented = operations(document)
    assert routes - documented == set(), "routes missing from the admin document"
    assert documented - routes == set(), "documented routes the admin API does not serve"


def test_every_error_code_is_documented_under_its_status(document) -> None:
    statuses = {spec.code: spec.status for spec in ERROR_CODES.values()} | WEB_CODES | ADMIN_CODES
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                schema = response["content"].get("application/json", {}).get("schema", {})
                if "allOf" not in schema:
                    continue
                for code in schema["allOf"][1]["properties"]["code"]["enum"]:
                    assert statuses.get(code) == int(status), (path, method, status, code)


def test_every_operation_but_the_document_needs_the_token(document) -> None:
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
