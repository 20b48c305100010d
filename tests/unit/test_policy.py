"""The core policy: modes, operations, catalog, classification (no servers)."""

from __future__ import annotations

import pytest

from maintenance_guard import (
    InvalidInput,
    MaintenanceMode,
    Operation,
    OperationCatalog,
    OperationMap,
    UnknownOperation,
)
from maintenance_guard.modes import HIGH_RISK_OPERATIONS, blocked_operations_for, decide

HIGH = frozenset(HIGH_RISK_OPERATIONS)


def test_mode_parse_accepts_contract_values_and_refuses_others() -> None:
    assert MaintenanceMode.parse("normal") is MaintenanceMode.NORMAL
    assert MaintenanceMode.parse(" Emergency ") is MaintenanceMode.EMERGENCY
    assert MaintenanceMode.parse(MaintenanceMode.TEST) is MaintenanceMode.TEST
    for bad in ("maintenance", "", None, 3, "normal;drop"):
        with pytest.raises(InvalidInput, match="unknown mode"):
            MaintenanceMode.parse(bad)


def test_operation_contract_values() -> None:
    assert {o.value for o in Operation} == {
        "caption_generation",
        "job_creation",
        "platform_operations",
        "batch_operations",
        "user_data_modification",
        "image_processing",
        "read",
        "admin",
    }


def test_normal_mode_blocks_high_risk_but_not_reads() -> None:
    catalog = OperationCatalog()
    blocked = blocked_operations_for(MaintenanceMode.NORMAL, catalog)
    assert blocked == HIGH
    assert decide(
        MaintenanceMode.NORMAL, "caption_generation", blocked, is_admin=False, normal_blocked=HIGH
    ).blocked
    assert not decide(
        MaintenanceMode.NORMAL, "read", blocked, is_admin=False, normal_blocked=HIGH
    ).blocked


def test_emergency_blocks_every_operation_including_reads_and_unclassified() -> None:
    catalog = OperationCatalog()
    blocked = blocked_operations_for(MaintenanceMode.EMERGENCY, catalog)
    assert set(catalog.names()) <= blocked
    for op in (*catalog.names(), None):
        assert decide(
            MaintenanceMode.EMERGENCY, op, blocked, is_admin=False, normal_blocked=HIGH
        ).blocked


def test_admins_bypass_every_mode() -> None:
    catalog = OperationCatalog()
    for mode in MaintenanceMode:
        blocked = blocked_operations_for(mode, catalog)
        for op in catalog.names():
            assert not decide(mode, op, blocked, is_admin=True, normal_blocked=HIGH).blocked


def test_test_mode_blocks_nothing_but_says_what_real_modes_would_do() -> None:
    d = decide(
        MaintenanceMode.TEST, "job_creation", frozenset(), is_admin=False, normal_blocked=HIGH
    )
    assert not d.blocked and d.would_block_normal and d.would_block_emergency
    d = decide(MaintenanceMode.TEST, "read", frozenset(), is_admin=False, normal_blocked=HIGH)
    assert not d.blocked and not d.would_block_normal and d.would_block_emergency


def test_unclassified_operation_is_only_refused_in_emergency() -> None:
    assert not decide(
        MaintenanceMode.NORMAL, None, HIGH, is_admin=False, normal_blocked=HIGH
    ).blocked


def test_catalog_has_user_guide_messages_and_accepts_custom_operations() -> None:
    catalog = OperationCatalog()
    assert catalog.info("caption_generation").message == (
        "Caption generation is temporarily unavailable due to system maintenance."
    )
    catalog.register("report_export", "Exports are paused during maintenance.", ["View reports"])
    assert "report_export" in catalog.high_risk()
    assert catalog.info("report_export").alternatives == ("View reports",)
    with pytest.raises(InvalidInput):
        catalog.register("Bad Name!", "x")


def test_catalog_refuses_unknown_operations_clearly() -> None:
    with pytest.raises(UnknownOperation, match="unknown operation 'captions'"):
        OperationCatalog().require("captions")
    assert issubclass(UnknownOperation, ValueError)


def test_operation_map_first_glob_match_wins_and_unmatched_is_none() -> None:
    mapping = OperationMap(
        {"app.tasks.caption_*": "caption_generation", "app.tasks.*": "job_creation"}
    )
    assert mapping.classify("app.tasks.caption_one") == "caption_generation"
    assert mapping.classify("app.tasks.resize") == "job_creation"
    assert mapping.classify("other.thing") is None
    assert mapping.classify("other.thing") is None  # memoised path


def test_operation_map_validation_names_the_unknown_operation() -> None:
    mapping = OperationMap({"x.*": "no_such_op"})
    with pytest.raises(UnknownOperation, match="no_such_op"):
        mapping.validate(OperationCatalog())
