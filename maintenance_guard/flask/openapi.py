"""The OpenAPI 3.1 document of the maintenance API, served at /api/maintenance/openapi.json."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from .openapi_schemas import SCHEMAS


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

_WINDOW_ID: dict[str, Any] = {
    "name": "window_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


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
                "summary": "In-flight jobs, blocked-attempt counts, recent history, window impact.",
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
        "/api/maintenance/schedule": {
            "get": {
                "summary": "Every scheduled window (administrators).",
                "security": _ADMIN_SECURITY,
                "responses": {
                    "200": {"description": "The windows.", "content": _json("Windows")},
                    "403": _error("Not an administrator."),
                    "503": _retry_error("The state store cannot be reached."),
                },
            },
            "post": {
                **_admin_post(
                    "Schedule a maintenance window.", "ScheduleRequest", body_required=True
                ),
                "responses": {
                    "200": {
                        "description": "The window, and every scheduled window.",
                        "content": _json("Windows"),
                    },
                    **_ADMIN_ERRORS,
                },
            },
        },
        "/api/maintenance/schedule/{window_id}/cancel": {
            "post": {
                **_admin_post("Cancel a window that has not started.", None, body_required=False),
                "parameters": [_WINDOW_ID],
                "responses": {
                    "200": {
                        "description": "The window cancelled, and those left.",
                        "content": _json("Windows"),
                    },
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/maintenance/schedule/{window_id}/reschedule": {
            "post": {
                **_admin_post(
                    "Move a window that has not started.", "RescheduleRequest", body_required=True
                ),
                "parameters": [_WINDOW_ID],
                "responses": {
                    "200": {
                        "description": "The window moved, and every scheduled window.",
                        "content": _json("Windows"),
                    },
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/maintenance/update": {
            "post": {
                **_admin_post(
                    "Post a progress update to the maintenance under way.",
                    "UpdateRequest",
                    body_required=True,
                ),
                "responses": {
                    "200": {"description": "Every update so far.", "content": _json("Updates")},
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/maintenance/schedule.ics": {
            "get": {
                "summary": "The announced windows as an iCalendar feed (RFC 5545).",
                "responses": {
                    "200": {
                        "description": "A calendar with one event per announced window.",
                        "content": {"text/calendar": {"schema": {"type": "string"}}},
                    }
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
        "schemas": SCHEMAS,
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
