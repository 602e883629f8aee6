"""The OpenAPI 3.1 document of the ingest endpoint, served at ``/openapi.json``.

It describes what :mod:`._http_policy` enforces; the tests drive generated requests
from it against a running endpoint.
"""

from __future__ import annotations

from typing import Any

from ._http_policy import IngestLimits


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(limits: IngestLimits, *, authenticated: bool) -> dict[str, Any]:
    """Return the OpenAPI document of an endpoint with ``limits``."""
    any_json: dict[str, Any] = {"description": "any JSON value (one record)"}
    post: dict[str, Any] = {
        "summary": "Append records to a topic",
        "description": (
            "Answers once every record is durable in the log. One JSON value is one "
            "record, a JSON array holds one record per element, NDJSON one record per "
            f"line. Bodies are at most {limits.max_body_bytes} bytes and records nest "
            f"at most {limits.max_depth} levels deep."
        ),
        "operationId": "appendRecords",
        "parameters": [
            {
                "name": "topic",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"},
            },
            {
                "name": "key",
                "in": "query",
                "required": False,
                "description": "the field of each object record whose value is its key",
                "schema": {"type": "string"},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a repeated key within the window appends once",
                "schema": {"type": "string", "maxLength": 255},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": any_json},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": {
                "description": "the records are durable; their partitions and offsets",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Appended"}}
                },
            },
            "400": _error("the body is malformed or nested too deeply"),
            "401": _error("a bearer token is missing or wrong"),
            "404": _error("no such topic"),
            "408": _error("the body did not arrive in time"),
            "413": _error("the body or a record is too large"),
            "415": _error("the content type is not JSON or NDJSON"),
            "422": _error("the idempotency key was used for another body"),
            "429": _error("too many requests at once: retry after Retry-After seconds"),
            "503": _error("the log cannot take writes now: retry after Retry-After seconds"),
        },
    }
    if authenticated:
        post["security"] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "headwater HTTP ingest", "version": "1"},
        "paths": {
            "/topics/{topic}/records": {"post": post},
            "/healthz": {
                "get": {
                    "summary": "Whether the endpoint is up",
                    "operationId": "health",
                    "responses": {"200": {"description": "it is"}},
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Appended": {
                    "type": "object",
                    "required": ["topic", "count", "offsets"],
                    "properties": {
                        "topic": {"type": "string"},
                        "count": {"type": "integer"},
                        "offsets": {
                            "description": "[partition, offset] of each record, in order",
                            "type": "array",
                            "items": {
                                "type": "array",
                                "prefixItems": [{"type": "integer"}, {"type": "integer"}],
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "code", "message"],
                            "properties": {
                                "status": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
