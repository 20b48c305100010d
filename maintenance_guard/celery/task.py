"""`GuardedTask`: the base class that declares a task's operation and refuses before
any message is built.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from ..deferred import check_policy
from ..errors import MaintenanceActive, MaintenanceGuardError
from .context import flag, local
from .deferral import defer_call
from .installation import Installation
from .names import option_names
from .publish import (
    expected_runtime_of,
    is_running_work,
    log_refusal,
    maintenance_off,
    refuse_names,
    refuse_publish,
)

logger = logging.getLogger("maintenance_guard")


class GuardedTask(Task):  # type: ignore[misc]
    """Base class declaring a task's operation; refuses in ``apply_async`` before any
    message is built.

    ``@app.task(base=GuardedTask, operation="caption_generation", on_maintenance="defer",
    expected_runtime=600)``.
    Raises `MaintenanceActive` when refused, unless ``on_maintenance="defer"`` (task
    option or ``apply_async`` keyword), which parks the submission for replay.
    """

    operation: str | None = None
    on_maintenance: str = "refuse"
    # Re-enqueued by `maintenance-guard recover` if an emergency terminates it.
    recoverable: bool = False
    # Seconds a run usually takes: before a scheduled window, a submission that would
    # still be running when it opens is refused (or deferred) instead of started.
    expected_runtime: float | None = None

    # What `apply_async` last found valid: (installation, operation, on_maintenance,
    # expected_runtime); checked again only when one of them changes.
    _mg_declared: tuple[Any, ...] | None = None

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        inst: Installation | None = getattr(self.app, "_maintenance_guard", None)
        if inst is None:
            raise MaintenanceGuardError(
                f"{self.name} uses GuardedTask but install(app, guard) was not called"
            )
        declared = (inst, self.operation, self.on_maintenance, self.expected_runtime)
        if declared != self._mg_declared:
            self._check_declaration(inst)
            self._mg_declared = declared
        if "on_maintenance" in options:
            # Left in the options when valid: the wrapped send_task takes it from there
            # (a window's lead time defers by it).
            if options["on_maintenance"]:
                check_policy(options["on_maintenance"])
            else:
                del options["on_maintenance"]
        guard = inst.guard
        if (
            inst.known_quiet()
            or maintenance_off(guard)
            or getattr(local, "checked", False)
            or getattr(local, "replaying", False)
        ):
            # The wrapped send_task Celery calls next does the rest (windows, queue
            # pauses, the headers): one check per publish, not one per layer.
            return super().apply_async(args, kwargs, **options)
        policy = options.pop("on_maintenance", None) or self.on_maintenance
        # Checked here, not in send_task: an eager task (task_always_eager) never
        # reaches it.
        operation = inst.operation_of(self.name, self)
        running = is_running_work(
            self.app, self.name, options.get("task_id"), options.get("parent_id")
        )
        try:
            refuse_publish(inst, self.name, operation, running_work=running)
        except MaintenanceActive as refused:
            if policy != "defer":
                log_refusal(self.name, operation, refused)
                raise
            return defer_call(inst, self.name, args, kwargs, operation, options, refused)
        refuse_names(inst, option_names(options), running_work=running)
        with flag("checked", True):
            return super().apply_async(args, kwargs, **options)

    def _check_declaration(self, inst: Installation) -> None:
        """Raise for an unknown operation (a typo is an error even when maintenance is
        off), a bad ``on_maintenance`` or a bad ``expected_runtime``."""
        if self.operation is not None and self.operation not in inst.guard.catalog:
            inst.guard.catalog.require(self.operation)
        check_policy(self.on_maintenance)
        expected_runtime_of(self)
