"""Celery adapter: refuse blocked submissions, re-check on the worker, track running jobs.

```python
from maintenance_guard.celery import GuardedTask, install

app = Celery("workers")
guard = install(app)            # or install(app, guard): connects everything below

@app.task(base=GuardedTask, operation="caption_generation", on_maintenance="defer")
def generate_caption(post_id): ...
```

- `publish`: the wrapped ``app.send_task`` refuses a blocked submission before any
  message is built (Celery's signals cannot refuse: ``Signal.send`` swallows receiver
  exceptions) and stamps the publish time; `canvas` refuses a chain, group or chord whole;
  `task` is `GuardedTask`; `deferral` parks a refused call for later.
- `worker`: a consumer bootstep re-checks each message on receipt; `start` checks a
  reserved message again just before it starts in the pool.
- `signals`: in-flight tracking and worker registration (they only observe).
- `emergency`: the worker side of emergency mode (remote-control commands, the consumer
  gate that pauses and resumes the worker from the state, `cleanup_on_terminate`).
- `installation` (what `install` connected, deferred replay), `wiring` (`install`,
  `uninstall`).
"""

from ..brokers import broker_of
from .canvas import refuse_canvas
from .context import (
    CONFIG_PREFIX,
    HEADER_ADMIN,
    HEADER_GUARDED,
    HEADER_PUBLISHED_AT,
    HEADER_REPLAYED,
    HEADER_RUNNING_WORK,
)
from .emergency import cleanup_on_terminate
from .installation import Installation, installation_of
from .publish import refuse_publish
from .start import guard_task_start
from .task import GuardedTask
from .wiring import install, uninstall
from .worker import GuardConsumerStep, worker_verdict

__all__ = [
    "CONFIG_PREFIX",
    "HEADER_ADMIN",
    "HEADER_GUARDED",
    "HEADER_PUBLISHED_AT",
    "HEADER_REPLAYED",
    "HEADER_RUNNING_WORK",
    "GuardConsumerStep",
    "GuardedTask",
    "Installation",
    "broker_of",
    "cleanup_on_terminate",
    "guard_task_start",
    "install",
    "installation_of",
    "refuse_canvas",
    "refuse_publish",
    "uninstall",
    "worker_verdict",
]
