"""The schemas of the maintenance API's OpenAPI document (components/schemas)."""

from __future__ import annotations

from typing import Any

_NULLABLE_STR: dict[str, Any] = {"type": ["string", "null"]}

_COUNTS: dict[str, Any] = {
    "type": "object",
    "description": "operation -> surface -> attempts",
    "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
}
_IMPACT: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "The user impact of the maintenance window under way, else of the last "
    "one (null before the first); counted per window.",
    "required": ["window", "active", "refused", "refused_total", "distinct_users"],
    "properties": {
        "window": {"type": "string"},
        "active": {"type": "boolean"},
        "opened_at": {**_NULLABLE_STR, "format": "date-time"},
        "ended_at": {**_NULLABLE_STR, "format": "date-time"},
        "modes": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"},
        "refused": _COUNTS,
        "refused_total": {"type": "integer", "minimum": 0},
        "would_refuse": {"type": "object", "additionalProperties": _COUNTS},
        "distinct_users": {"type": "integer", "minimum": 0},
        "distinct_users_approximate": {"type": "boolean"},
        "refused_without_user": {"type": "integer", "minimum": 0},
        "attempts_per_minute": {
            "type": "object",
            "required": ["start", "step_minutes", "counts"],
            "properties": {
                "start": {**_NULLABLE_STR, "format": "date-time"},
                "step_minutes": {"type": "integer", "minimum": 1},
                "counts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
        },
        "jobs_finished": {"type": "integer", "minimum": 0},
        "jobs_finished_by_operation": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
        },
        "sessions": {
            "type": ["object", "null"],
            "description": "Flask-Session sessions in Redis now, by role; null: unknown.",
            "properties": {
                "admin": {"type": "integer", "minimum": 0},
                "non_admin": {"type": "integer", "minimum": 0},
                "undecodable": {"type": "integer", "minimum": 0},
                "truncated": {"type": "boolean"},
            },
        },
    },
}

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
        "upcoming": {
            "description": "The next announced maintenance window that has not started.",
            "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Window"}],
        },
        "updates": {
            "type": "array",
            "description": "Progress updates of the maintenance under way, oldest first.",
            "items": {
                "type": "object",
                "required": ["at", "text"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "text": {"type": "string"},
                    "by": {"type": "string"},
                },
            },
        },
        "windows": {
            "type": "array",
            "description": "Only for administrators: every scheduled window.",
            "items": {"$ref": "#/components/schemas/Window"},
        },
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


SCHEMAS: dict[str, Any] = {
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
            "impact": _IMPACT,
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
    "Window": {
        "type": "object",
        "required": ["id", "start", "expected_end", "mode", "reason", "blocked_operations"],
        "properties": {
            "id": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "expected_end": {"type": "string", "format": "date-time"},
            "mode": {"type": "string", "enum": ["normal", "test"]},
            "reason": {"type": "string"},
            "blocked_operations": {"type": "array", "items": {"type": "string"}},
            "by": {"type": "string"},
            "announce_at": {"type": ["string", "null"], "format": "date-time"},
            "notice": {"type": "integer", "minimum": 0},
            "auto_end": {"type": "boolean"},
            "drain_before": {"type": "integer", "minimum": 0},
            "duration": {"type": "integer", "minimum": 1},
        },
    },
    "Windows": {
        "type": "object",
        "required": ["windows"],
        "properties": {
            "window": {"$ref": "#/components/schemas/Window"},
            "windows": {"type": "array", "items": {"$ref": "#/components/schemas/Window"}},
        },
    },
    "Updates": {
        "type": "object",
        "required": ["updates"],
        "properties": {"updates": STATUS_SCHEMA["properties"]["updates"]},
    },
    "ScheduleRequest": {
        "type": "object",
        "required": ["at", "duration", "reason"],
        "additionalProperties": False,
        "properties": {
            "at": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 with a zone; in the future.",
            },
            "duration": _DURATION,
            "mode": {"type": "string", "enum": ["normal", "test"]},
            "reason": _REASON,
            "notice": _DURATION,
            "auto_end": {"type": "boolean"},
            "operations": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "drain_before": _DURATION,
        },
    },
    "RescheduleRequest": {
        "type": "object",
        "required": ["at"],
        "additionalProperties": False,
        "properties": {"at": {"type": "string", "format": "date-time"}},
    },
    "UpdateRequest": {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {"text": _REASON},
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
}
