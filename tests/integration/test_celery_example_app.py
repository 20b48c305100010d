"""The example app: ``celery -A workers worker`` with ``celeryconfig.py``, end to end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

from maintenance_guard import MaintenanceGuard
from tests.cleanup import forget_default_pidbox
from tests.integration import celery_support
from tests.integration.celery_support import ROOT, Broker, StartWorker, new_queue

redis_broker = celery_support.redis_broker
start_worker = celery_support.start_worker

PRODUCER = textwrap.dedent(
    """
    import sys
    import workers
    from workers import tasks
    from maintenance_guard import MaintenanceActive

    assert "flask" not in sys.modules, "workers must import without Flask"
    ops = {name: workers.guard.task_operations.classify(name)
           for name in sorted(workers.app.tasks) if name.startswith("workers.")}
    print("classified", ops, flush=True)

    def run(task, *args, **kwargs):
        result = task.delay(*args, **kwargs)
        try:
            return result.get(timeout=30)
        finally:
            result.forget()  # leave no result key behind

    assert run(tasks.fetch_report, 1, duration=0.05)["report_id"] == 1
    assert run(tasks.generate_caption, 7, duration=0.05)["post_id"] == 7

    workers.guard.enable("normal", reason="example app check", by="test")
    refused = []
    for task, args in [(tasks.generate_caption, (1,)), (tasks.process_image, (1,)),
                       (tasks.create_job, ({"name": "x"},)), (tasks.sync_platform, ("x",)),
                       (tasks.run_batch, ([1, 2],)), (tasks.update_user_profile, (1, {"a": 1}))]:
        try:
            task.delay(*args)
        except MaintenanceActive as exc:
            refused.append(exc.operation)
    print("refused", refused, flush=True)
    assert run(tasks.fetch_report, 2, duration=0.05)["report_id"] == 2
    workers.guard.disable(by="test")
    print("ok", flush=True)
    """
)


def test_example_app_worker_runs_tasks_and_refuses_every_blocked_operation(
    redis_broker: Broker,
    start_worker: StartWorker,
    cli_env: dict[str, str],
    guard: MaintenanceGuard,
    cleanup_after_test: list[Callable[[], None]],
) -> None:
    queue = new_queue(redis_broker)
    # The example app's worker listens on Celery's default control exchange.
    cleanup_after_test.append(lambda: forget_default_pidbox(redis_broker.url))
    env = dict(
        cli_env,
        CELERY_BROKER_URL=redis_broker.url,
        CELERY_RESULT_BACKEND=redis_broker.redis_url,
        WORKERS_QUEUE=queue,
    )
    start_worker(redis_broker, queue, app_module="workers", extra_env=env)
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'workers.tasks.create_job': 'job_creation'" in done.stdout
    assert "'workers.tasks.fetch_report': 'read'" in done.stdout
    refused_line = next(line for line in done.stdout.splitlines() if line.startswith("refused"))
    for operation in (
        "caption_generation",
        "image_processing",
        "job_creation",
        "platform_operations",
        "batch_operations",
        "user_data_modification",
    ):
        assert operation in refused_line
    assert done.stdout.rstrip().endswith("ok")
    assert redis_broker.queue_length(queue) == 0
