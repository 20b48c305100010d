"""The OpenAPI 3.1 document of the maintenance API, served at /api/maintenance/openapi.json."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

_NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "is_active",
        "mode",
        "reason",
        "estimated_duration",
        "started_at",
        "estimated_completion",
        "blocked_operations",
        "message",
        "active_jobs_count",
    ],
    "properties": {
        "is_active": {"type": "boolean"},
        "mode": {"type": ["string", "null"], "enum": ["normal", "emergency", "test", None]},
        "reason": _NULLABLE_STR,
        "estimated_duration": {"type": ["integer", "null"], "minimum": 1},
        "started_at": {**_NULLABLE_STR, "format": "date-time"},
        "estimated_completion": {**_NULLABLE_STR, "format": "date-time"},
        "blocked_operations": {"type": "array", "items": {"type": "string"}},
        "message": {"type": "string"},
        "active_jobs_count": {"type": "integer", "minimum": 0},
        "overrunning": {"type": "boolean"},
        "auto_end": {"type": "boolean"},
        "retry_after": {"type": ["integer", "null"], "minimum": 1},
        "enabled_by": {
            "type": ["string", "null"],
            "description": "Only for administrators.",
        },
        "version": {"type": "integer", "description": "Only for administrators."},
        "paused_queues": {
            "type": "array",
            "description": "Queues the workers do not consume now (reason, by, paused_at "
            "and workers only for administrators; workers null: all).",
            "items": {
                "type": "object",
                "required": ["queue", "until", "beat"],
                "properties": {
                    "queue": {"type": "string"},
                    "until": {**_NULLABLE_STR, "format": "date-time"},
                    "beat": {"type": "boolean"},
                    "reason": {"type": "string"},
                    "by": {"type": "string"},
                    "paused_at": {"type": "string", "format": "date-time"},
                    "workers": {"type": ["array", "null"], "items": {"type": "string"}},
                },
            },
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}

_DURATION: dict[str, Any] = {
    "description": "Seconds, or a text like 90s, 30m, 2h, 6d; combined forms such as "
    "1h30m are accepted too. At least 1 second, at most 7 days.",
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 604800},
        {"type": "string", "pattern": r"^([1-9][0-9]{0,3}[sm]|[1-9][0-9]?h|[1-7]d)$"},
    ],
}

# A queue or worker name (maintenance_guard.pauses).
_NAME: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@\-]{1,200}$"}
_NAMES: dict[str, Any] = {"type": "array", "items": _NAME, "minItems": 1, "maxItems": 100}

# Text with at least one visible character (control characters are stripped).
_REASON: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 500,
    "pattern": "[^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]",
}


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


def _retry_error(description: str) -> dict[str, Any]:
    return {
        **_error(description),
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    }


_ADMIN_ERRORS: dict[str, Any] = {
    "400": _error("Malformed JSON or invalid values (the guard's validation message)."),
    "403": _error("Not an administrator, or CSRF check failed."),
    "409": _error("The state changed concurrently; retry."),
    "413": _error("Body larger than the limit (64 KiB by default)."),
    "415": _error("Body not sent as application/json."),
    "503": _retry_error("The state store cannot be reached."),
}

_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]


def _admin_post(summary: str, body_schema: str | None, *, body_required: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": _ADMIN_SECURITY,
        "responses": {
            "200": {"description": "The new state.", "content": _json("AdminStatus")},
            **_ADMIN_ERRORS,
        },
    }
    if body_schema is not None:
        op["requestBody"] = {"required": body_required, "content": _json(body_schema)}
    return op


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "maintenance-guard",
        "version": "1",
        "description": "Maintenance status for everyone; switching for administrators.",
    },
    "paths": {
        "/api/maintenance/status": {
            "get": {
                "summary": "The maintenance state (contract JSON).",
                "responses": {"200": {"description": "State.", "content": _json("Status")}},
            }
        },
        "/api/maintenance/blocked-operations": {
            "get": {
                "summary": "Operations refused now, with their messages.",
                "responses": {
                    "200": {"description": "Blocked operations.", "content": _json("Blocked")}
                },
            }
        },
        "/api/maintenance/message/{operation}": {
            "get": {
                "summary": "The user message for one operation.",
                "parameters": [
                    {
                        "name": "operation",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "Message.", "content": _json("OperationMessage")},
                    "404": _error("Unknown operation."),
                },
            }
        },
        "/api/maintenance/stream": {
            "get": {
                "summary": "Server-Sent Events: `status` events (Status JSON) on every change.",
                "responses": {
                    "200": {
                        "description": "An event stream; a heartbeat comment every 15 s.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "429": _retry_error("Too many open streams."),
                },
            }
        },
        "/api/maintenance/csrf-token": {
            "get": {
                "summary": "The session's CSRF token for the admin routes.",
                "security": [{"session": []}],
                "responses": {
                    "200": {"description": "Token.", "content": _json("CsrfToken")},
                    "403": _error("Not an administrator."),
                },
            }
        },
        "/api/maintenance/admin/overview": {
            "get": {
                "summary": "In-flight jobs, blocked-attempt counts and recent history.",
                "security": [{"session": []}],
                "responses": {
                    "200": {"description": "Overview.", "content": _json("Overview")},
                    "403": _error("Not an administrator."),
                },
            }
        },
        "/api/maintenance/enable": {
            "post": _admin_post("Switch maintenance on.", "EnableRequest", body_required=True)
        },
        "/api/maintenance/disable": {
            "post": _admin_post("Switch maintenance off.", "DisableRequest", body_required=False)
        },
        "/api/maintenance/pause": {
            "post": {
                **_admin_post(
                    "Pause queues: this app's workers stop consuming them, fleet-wide.",
                    "PauseRequest",
                    body_required=True,
                ),
                "responses": {
                    "200": {
                        "description": "The pauses now in effect, and warnings.",
                        "content": _json("Pauses"),
                    },
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/maintenance/resume": {
            "post": {
                **_admin_post("Resume paused queues.", "ResumeRequest", body_required=True),
                "responses": {
                    "200": {
                        "description": "What was resumed, and the pauses left.",
                        "content": _json("Pauses"),
                    },
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/maintenance/emergency": {
            "post": _admin_post(
                "Emergency mode: block everything, revoke running work after the grace period.",
                "EmergencyRequest",
                body_required=True,
            )
        },
    },
    "components": {
        "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
        },
        "schemas": {
            "Status": STATUS_SCHEMA,
            "AdminStatus": {
                **STATUS_SCHEMA,
                "properties": {
                    **STATUS_SCHEMA["properties"],
                    "grace_period": {"type": "integer", "minimum": 0},
                    "report": {},
                },
            },
            "Error": ERROR_SCHEMA,
            "Blocked": {
                "type": "object",
                "required": ["is_active", "mode", "blocked_operations", "details"],
                "properties": {
                    "is_active": {"type": "boolean"},
                    "mode": {"type": ["string", "null"]},
                    "blocked_operations": {"type": "array", "items": {"type": "string"}},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["operation", "message", "alternatives"],
                            "properties": {
                                "operation": {"type": "string"},
                                "message": {"type": "string"},
                                "alternatives": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                },
            },
            "OperationMessage": {
                "type": "object",
                "required": ["operation", "blocked", "mode", "message", "alternatives"],
                "properties": {
                    "operation": {"type": "string"},
                    "blocked": {"type": "boolean"},
                    "mode": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                    "alternatives": {"type": "array", "items": {"type": "string"}},
                    "retry_after": {"type": ["integer", "null"], "minimum": 1},
                },
            },
            "CsrfToken": {
                "type": "object",
                "required": ["csrf_token", "header"],
                "properties": {"csrf_token": {"type": "string"}, "header": {"type": "string"}},
            },
            "Overview": {
                "type": "object",
                "required": ["active_jobs_count", "attempts", "events"],
                "properties": {
                    "active_jobs_count": {"type": "integer", "minimum": 0},
                    "jobs": {"type": ["array", "null"], "items": {"type": "object"}},
                    "attempts": {"type": "object"},
                    "events": {"type": "array", "items": {"type": "object"}},
                    "store_available": {"type": "boolean"},
                },
            },
            "EnableRequest": {
                "type": "object",
                "required": ["reason"],
                "additionalProperties": False,
                "allOf": [
                    {
                        "if": {
                            "required": ["auto_end"],
                            "properties": {"auto_end": {"const": True}},
                        },
                        "then": {"required": ["duration"]},
                    },
                    {
                        "if": {
                            "required": ["mode"],
                            "properties": {"mode": {"const": "emergency"}},
                        },
                        "then": {"not": {"required": ["operations"]}},
                    },
                ],
                "properties": {
                    "mode": {"type": "string", "enum": ["normal", "emergency", "test"]},
                    "reason": _REASON,
                    "duration": _DURATION,
                    "auto_end": {"type": "boolean"},
                    "operations": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
            },
            "DisableRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"reason": {"type": "string", "maxLength": 500}},
            },
            "PauseRequest": {
                "type": "object",
                "required": ["queues", "reason"],
                "additionalProperties": False,
                "properties": {
                    "queues": _NAMES,
                    "reason": _REASON,
                    "duration": _DURATION,
                    "workers": {**_NAMES, "minItems": 0},
                    "beat": {"type": "boolean"},
                },
            },
            "ResumeRequest": {
                "type": "object",
                "additionalProperties": False,
                "description": "Either queues or all: true.",
                "oneOf": [
                    {"required": ["queues"], "not": {"required": ["all"]}},
                    {"required": ["all"], "not": {"required": ["queues"]}},
                ],
                "properties": {"queues": _NAMES, "all": {"const": True}},
            },
            "Pauses": {
                "type": "object",
                "required": ["paused_queues"],
                "properties": {
                    "paused_queues": STATUS_SCHEMA["properties"]["paused_queues"],
                    "warnings": {"type": "array", "items": {"type": "string"}},
                    "resumed": {"type": "array", "items": {"type": "string"}},
                },
            },
            "EmergencyRequest": {
                "type": "object",
                "required": ["reason"],
                "additionalProperties": False,
                "properties": {
                    "reason": _REASON,
                    "grace_period": {"type": "integer", "minimum": 0, "maximum": 3600},
                },
            },
        },
    },
}


def openapi_document(operations: Iterable[str] = ()) -> dict[str, Any]:
    """The API description; ``operations`` (the catalog's names) become the documented
    values of the operation path parameter and request fields."""
    doc = copy.deepcopy(_DOCUMENT)
    names = sorted(set(operations))
    if names:
        path = doc["paths"]["/api/maintenance/message/{operation}"]["get"]
        path["parameters"][0]["schema"]["examples"] = names
        enable = doc["components"]["schemas"]["EnableRequest"]["properties"]
        enable["operations"]["items"] = {"type": "string", "enum": names}
    return doc
