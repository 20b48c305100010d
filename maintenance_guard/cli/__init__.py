"""The `maintenance-guard` command line (click): the group and its commands, added here.

`group.py` holds the `main` group and what commands share, `errors.py` the one-line errors
and exit codes (input 2, unreachable Redis 3); each other module defines one family of
commands without importing the group.
"""

from __future__ import annotations

from . import demo, embedded, emergency, jobs, pauses, report, schedule, state
from .group import main

__all__ = ["main"]

main.add_command(state.status)
main.add_command(state.enable)
main.add_command(state.disable)
main.add_command(state.events)
main.add_command(jobs.jobs)
main.add_command(jobs.drain_command)
main.add_command(jobs.deferred)
main.add_command(emergency.emergency)
main.add_command(emergency.recover)
main.add_command(schedule.schedule)
main.add_command(schedule.update)
main.add_command(pauses.pause)
main.add_command(pauses.resume)
main.add_command(pauses.paused)
main.add_command(report.report)
main.add_command(report.reset_test)
main.add_command(demo.demo)
main.add_command(embedded.embedded)
