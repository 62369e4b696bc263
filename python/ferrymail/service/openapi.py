"""The OpenAPI 3.1 document of /v1, its schemas generated from the msgspec structs."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from ..spool.rows import Report, Status
from . import models

_TYPES = (
    models.CampaignIn,
    models.CampaignStored,
    models.SubmitOut,
    models.Cancelled,
    models.Flushed,
    models.SuppressionIn,
    models.Suppression,
    models.ErrorOut,
    models.TemplateErrorDetail,
    Report,
    Status,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(name: str, what: str = "OK") -> dict[str, Any]:
    return {"description": what, "content": {"application/json": {"schema": _ref(name)}}}


_ERRORS = {
    "400": _answer("ErrorOut", "the body is not JSON (or its array does not end)"),
    "401": _answer("ErrorOut", "no key, or an unknown one"),
    "403": _answer("ErrorOut", "a read-only key on a write"),
    "404": _answer("ErrorOut", "no such campaign or resource"),
    "409": _answer("ErrorOut", "the campaign is cancelled, or sent from with another spec"),
    "413": _answer("ErrorOut", "the body is over its size limit"),
    "422": _answer("ErrorOut", "the body is not valid (a template error: part, line, column)"),
    "500": _answer("ErrorOut", "the server failed"),
}


def _op(summary: str, answer: str, body: str | None = None, **more: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _answer(answer), **_ERRORS}}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    op.update(more)
    return op


def _any(kind: type) -> dict[str, Any]:
    """The schema of a field typed `object` (a report's free-form values): any JSON."""
    if kind is object:
        return {"description": "any JSON value"}
    raise NotImplementedError(kind)


@functools.cache
def document() -> bytes:
    """The document as JSON bytes (made once)."""
    _, components = msgspec.json.schema_components(
        _TYPES, schema_hook=_any, ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():
        # The server never answers a field the document does not name: say so, so that
        # clients (and the tests) may rely on it.
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    campaign_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    address = {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}}
    recipient = {
        "type": "object",
        "properties": {"email": {"type": "string"}, "id": {"type": ["string", "integer"]}},
        "required": ["email"],
        "description": "the other keys are the recipient's template variables",
    }
    jsonl = {
        "required": True,
        "description": "JSON lines (one recipient a line) or a JSON array of recipients; "
        "streamed: it may be far larger than memory",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": recipient}},
        },
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "ferrymail service API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/campaigns/{id}": {
                "parameters": [campaign_id],
                "put": _op("store a campaign", "CampaignStored", "CampaignIn"),
                "get": _op("the campaign's report", "Report"),
            },
            "/v1/campaigns/{id}/recipients": {
                "parameters": [campaign_id],
                "post": _op(
                    "submit recipients (JSON lines, streamed)", "SubmitOut", requestBody=jsonl
                ),
            },
            "/v1/campaigns/{id}/cancel": {
                "parameters": [campaign_id],
                "post": _op("cancel the campaign", "Cancelled"),
            },
            "/v1/status": {"get": _op("the spool at a glance", "Status")},
            "/v1/flush": {"post": _op("make deferred recipients due now", "Flushed")},
            "/v1/suppressions/{address}": {
                "parameters": [address],
                "get": _op("is the address suppressed", "Suppression"),
                "put": _op("suppress the address", "Suppression"),
                "delete": _op("lift the suppression", "Suppression"),
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "this document",
                    "security": [],
                    "responses": {"200": {"description": "OK"}},
                }
            },
        },
    }
    return msgspec.json.encode(doc)
