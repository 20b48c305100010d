"""The documentation site (mkdocs.yml, docs/) stays true to the code.

- The example Prometheus rules use only metrics that `maintenance_guard.metrics` really
  exports (names read from a live registry), and pass ``promtool`` when it is installed.
- ``mkdocs build --strict`` passes (broken links, anchors, snippets, docstrings fail it).
- Every test that docs/guarantees.md names exists, so renaming a test breaks this check.
- The configuration and HTTP API pages name every setting and every route the code has.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from maintenance_guard import GuardSettings, MaintenanceGuard, MemoryStore, metrics
from maintenance_guard.flask import FlaskMaintenance
from maintenance_guard.flask.config import CONFIG_PREFIX, DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RULES = DOCS / "alerts" / "maintenance-guard.rules.yml"
RULES_TESTS = DOCS / "alerts" / "maintenance-guard.rules.test.yml"

# Sample names a metric family of each type exposes besides its own name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": (),
}
# PromQL words that look like metric names in an expression.
_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "sum", "min", "max", "avg", "count", "rate", "irate", "increase",
    "delta", "deriv", "time", "absent", "topk", "bottomk", "quantile", "stddev",
    "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time", "vector",
    "scalar", "clamp_min", "clamp_max", "changes", "resets", "label_replace", "inf", "nan",
}  # fmt: skip


def _exported_names() -> set[str]:
    """Every metric and sample name a real instrumented guard exposes."""
    guard = MaintenanceGuard(MemoryStore())
    try:
        registry = metrics.instrument(guard)
        # With a duration, so every state gauge (the expected end too) has a value.
        guard.enable("normal", reason="docs check", duration=3600)
        names: set[str] = set()
        for family in registry.collect():
            names.add(family.name)
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
        return names
    finally:
        guard.stop()


def _expr_metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that name series (not functions, labels or keywords)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", n)}


def test_every_alert_rule_uses_only_metrics_the_library_exports() -> None:
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load(RULES.read_text())
    exported = _exported_names()
    assert "maintenance_guard_active" in exported  # the registry was really read
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert alerts, "no rules in the file"
    for rule in alerts:
        assert rule.get("alert"), rule
        used = _expr_metric_names(str(rule["expr"]))
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = used - exported
        assert not unknown, f"{rule['alert']} uses metrics that do not exist: {sorted(unknown)}"


def test_the_metric_check_sees_a_metric_that_does_not_exist() -> None:
    expr = 'sum by (job) (rate(maintenance_guard_deliveries_failed_total{queue="a"}[5m])) > 0'
    assert _expr_metric_names(expr) == {"maintenance_guard_deliveries_failed_total"}
    assert "maintenance_guard_deliveries_failed_total" not in _exported_names()


def test_the_rule_file_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        cwd=RULES_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()


# Guarantees name their tests as `R/test_x.py::test_y` (R/ is tests/reliability/, I/ is
# tests/integration/), `tests/unit/test_x.py`, or `::test_y` alone: a test of the file
# named earlier in the same bullet, else of the files in the section's bold heading.
_ALIASES = {"R/": "tests/reliability/", "I/": "tests/integration/"}
_TEST_REF = re.compile(r"((?:R/|I/|tests/)[\w/]+\.py)?(?:::(\w+))?")


def _defines(path: Path, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def {name}\(", path.read_text(), re.M) is not None


def _test_references(text: str) -> list[tuple[str, list[Path], str | None]]:
    """(reference as written, files it may be in, test name or None) for each one."""
    found: list[tuple[str, list[Path], str | None]] = []
    section_files: list[Path] = []
    for block in re.split(r"\n(?=- |\*\*)", text):
        files_here: list[Path] = []
        last: Path | None = None
        for code in re.findall(r"`([^`\n]+)`", block):
            match = _TEST_REF.fullmatch(code)
            if match is None or not (match.group(1) or match.group(2)):
                continue
            file, name = match.group(1), match.group(2)
            if file:
                for alias, full in _ALIASES.items():
                    if file.startswith(alias):
                        file = full + file[len(alias) :]
                last = ROOT / file
                files_here.append(last)
            found.append((code, [last] if last else list(section_files), name))
        if block.startswith("**"):
            section_files = files_here
    return found


def test_every_test_the_guarantees_name_exists() -> None:
    refs = _test_references((DOCS / "guarantees.md").read_text())
    assert len(refs) >= 40, f"only {len(refs)} test references found: is the format changed?"
    missing = []
    for code, files, name in refs:
        if not files:
            missing.append(f"{code}: no file to look in")
        elif not all(f.is_file() for f in files):
            missing.append(f"{code}: no such file {[str(f) for f in files if not f.is_file()]}")
        elif name and not any(_defines(f, name) for f in files):
            missing.append(f"{code}: no test {name} in {[f.name for f in files]}")
    assert not missing, "\n".join(missing)


def test_the_guarantees_check_notices_a_renamed_test() -> None:
    text = "**Faults** (`R/test_faults_worker_kill.py`)\n- a line `::test_that_was_renamed`\n"
    *_heading, (_code, files, name) = _test_references(text)
    assert name == "test_that_was_renamed"
    assert files == [ROOT / "tests/reliability/test_faults_worker_kill.py"]
    assert not _defines(files[0], name)


def test_the_configuration_page_names_every_setting() -> None:
    page = (DOCS / "configuration.md").read_text()
    fields = [f for f in GuardSettings.__dataclass_fields__]
    missing = [f for f in fields if f"`{f}`" not in page]
    missing += [key for key in DEFAULTS if f"`{CONFIG_PREFIX}{key}`" not in page]
    assert not missing, f"docs/configuration.md does not name: {missing}"


def test_the_http_api_page_names_every_route() -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "docs"
    guard = MaintenanceGuard(MemoryStore())
    try:
        FlaskMaintenance(app, guard)
        page = (DOCS / "http-api.md").read_text()
        rules = {
            re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule.rule)
            for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith("maintenance_guard.")
            and rule.endpoint != "maintenance_guard.static"
        }
        missing = sorted(rule for rule in rules if rule not in page)
        assert not missing, f"docs/http-api.md does not name: {missing}"
    finally:
        guard.stop()
