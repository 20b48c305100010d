"""The version matrix: ``nox -l`` lists the sessions.

- ``compat-3.10`` ... ``compat-3.13``: the fast compatibility subset (the core, the Celery
  publish path with its canvas and ``send_task`` patching, the state on Redis, the Flask
  API) on each Python, with the newest releases the bounds allow.
- ``oldest``: the same subset on Python 3.10 with the lowest version ``pyproject.toml``
  allows of Celery, kombu, Flask, redis-py and the other runtime dependencies.
- ``newest``: the same subset on Python 3.13 with the newest releases.

The full suite runs on Python 3.11 with ``python -m pytest`` (the README's command); CI
runs it and then these sessions (``.ci/run``). Tests use ``$REDIS_URL`` or a private
redis-server, as the main suite does.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox


def _pyenv_pythons() -> None:
    """With pyenv, its ``python3.10`` shim runs only if 3.10 is an active version: make
    every installed CPython 3.10-3.13 active for this run, after the ones already active."""
    if not shutil.which("pyenv"):
        return
    bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True)
    versions = [
        v
        for v in bare.stdout.split()
        if v.split(".")[:2] in (["3", m] for m in "10 11 12 13".split())
    ]
    current = (
        os.environ.get("PYENV_VERSION")
        or subprocess.run(["pyenv", "version-name"], capture_output=True, text=True).stdout
    )
    ordered = [v for v in current.strip().split(":") if v] + versions
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(ordered))


_pyenv_pythons()

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# The lower bounds of pyproject.toml, pinned: `oldest` proves they are true.
OLDEST = [
    "celery==5.3.6",
    "kombu==5.3.7",
    "redis==5.0.8",
    "click==8.1.3",
    "rich==13.0.0",
    "prometheus-client==0.20.0",
    "flask==2.3.3",
    "werkzeug==2.3.8",
    "msgspec==0.18.6",
    "icalendar==5.0.0",
    "apprise==1.6.0",
]

# What the compatibility subset needs besides the package (no browser, no load tools).
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "pytest-celery>=1.0",
    "Flask-Session>=0.8",
    "requests>=2.28",
]

COMPAT_TESTS = [
    "tests/unit",
    "tests/integration/test_celery_publish.py",
    "tests/integration/test_state.py",
    "tests/integration/test_flask_api.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_fleet_costs.py",
    "tests/integration/test_notifications.py",
]


def _subset(session: nox.Session) -> None:
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *COMPAT_TESTS, *session.posargs
    )


@nox.session(python=PYTHONS)
def compat(session: nox.Session) -> None:
    """The compatibility subset on each Python, newest releases within the bounds."""
    session.install("-e", ".[demo,notify]", *TEST_DEPS)
    _subset(session)


@nox.session(python="3.10")
def oldest(session: nox.Session) -> None:
    """The compatibility subset on the lowest supported releases."""
    session.install("-e", ".[demo,notify]", *TEST_DEPS)
    session.install(*OLDEST)
    session.run("python", "-m", "pip", "check")
    _subset(session)


@nox.session(python="3.13")
def newest(session: nox.Session) -> None:
    """The compatibility subset on the newest releases (upgraded past any cached ones)."""
    session.install("-e", ".[demo,notify]", *TEST_DEPS)
    session.install("-U", "celery", "kombu", "redis", "flask", "click", "rich", "msgspec")
    _subset(session)
