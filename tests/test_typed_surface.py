"""The typed, documented surface: every public object has a docstring (in
the stub or at runtime), every ``stats()`` key is declared and documented
in its TypedDict, and mypy --strict checks stats keys in user code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pydoc
import subprocess
import sys
import textwrap
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import edgeless_telemetry
from edgeless_telemetry import _core, stats
from edgeless_telemetry.stats import (
    CollectorCoreStats,
    ControlPlaneTracerStats,
    NodeReporterStats,
    OrchestratorCollectorStats,
    PerformanceTargetStats,
    PrometheusTargetStats,
    TelemetryProcessorStats,
)
from redis_fixture import RedisServer

PACKAGE = Path(edgeless_telemetry.__file__).parent
STUB = PACKAGE / "_core.pyi"
# Dunders a user calls (or `with` calls) and so must document.
DOCUMENTED_DUNDERS = {"__new__", "__enter__", "__exit__", "__call__"}


def _public(name: str) -> bool:
    return not name.startswith("_") or name in DOCUMENTED_DUNDERS


def _stub_classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _missing_stub_docstrings() -> list[str]:
    tree = ast.parse(STUB.read_text())
    missing = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and _public(node.name) and not ast.get_docstring(node):
            missing.append(node.name)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                missing.append(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and _public(item.name) and not ast.get_docstring(item):
                    missing.append(f"{node.name}.{item.name}")
    return missing


def test_every_public_class_and_method_of_the_stub_has_a_docstring() -> None:
    assert _missing_stub_docstrings() == []
    # The check itself sees what it should: classes and methods it parsed.
    classes = _stub_classes()
    assert {"TelemetryHandle", "TelemetryProcessor", "ControlPlaneTracer", "CollectorCore"} <= set(classes)
    assert any(isinstance(i, ast.FunctionDef) and i.name == "stats" for i in classes["ReporterCore"].body)


def _own_doc(obj: Any) -> str:
    """The docstring written for ``obj`` itself (not a dataclass's generated
    signature line, not one inherited from ``object`` or ``Enum``)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""
    return str(doc).strip()


def _python_members(cls: type) -> dict[str, Any]:
    """Public members defined (in Python, in this package) by ``cls`` itself."""
    out = {}
    for name, member in vars(cls).items():
        if not _public(name):
            continue
        func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if callable(func) and getattr(func, "__module__", "").startswith("edgeless_telemetry"):
            out[name] = func
    return out


def test_every_exported_object_has_a_docstring_in_the_stub_or_at_runtime() -> None:
    stub_classes = _stub_classes()
    missing: list[str] = []
    checked = 0
    for name in edgeless_telemetry.__all__:
        obj = getattr(edgeless_telemetry, name)
        if not (inspect.isclass(obj) or callable(obj)):
            continue  # __version__: documented in the stub as an attribute
        checked += 1
        if getattr(obj, "__module__", "") == _core.__name__:
            # A Rust class: its documentation is the stub's (checked above).
            if obj.__name__ not in stub_classes:
                missing.append(f"{name} (not in _core.pyi)")
            continue
        if not _own_doc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for member_name, member in _python_members(obj).items():
                if not _own_doc(member):
                    missing.append(f"{name}.{member_name}")
            # What it inherits from Rust is documented in the stub.
            for base in obj.__mro__[1:]:
                if base.__module__ == _core.__name__ and base.__name__ not in stub_classes:
                    missing.append(f"{name} (base {base.__name__} not in _core.pyi)")
    assert missing == []
    assert checked >= 25


def test_every_stats_key_has_a_docstring_line() -> None:
    """One docstring per declared key in ``stats.py`` (attribute docstrings
    exist only in the source, so read it)."""
    tree = ast.parse(Path(stats.__file__).read_text())
    undocumented = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for i, item in enumerate(body):
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                after = body[i + 1] if i + 1 < len(body) else None
                documented = (
                    isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                    and after.value.value.strip()
                )
                if not documented:
                    undocumented.append(f"{node.name}.{item.target.id}")
    assert undocumented == []


def _bare_help(objects: list[tuple[str, Any]]) -> list[str]:
    """Names whose ``help()`` shows no description (under five words)."""
    bare = []
    for name, obj in objects:
        doc = inspect.getdoc(obj) or ""
        if len(doc.split()) < 5:
            bare.append(name)
        else:
            assert doc.splitlines()[0] in pydoc.render_doc(obj, renderer=pydoc.plaintext), name
    return bare


def _exported(from_rust: bool) -> list[tuple[str, Any]]:
    out = []
    for name in edgeless_telemetry.__all__:
        obj = getattr(edgeless_telemetry, name)
        if not inspect.isclass(obj) and not callable(obj):
            continue
        if (getattr(obj, "__module__", "") == _core.__name__) != from_rust:
            continue
        out.append((name, obj))
        if inspect.isclass(obj):
            members = _python_members(obj) if not from_rust else {
                k: v.__func__ if isinstance(v, staticmethod) else v
                for k, v in vars(obj).items() if _public(k) and k != "__new__"}
            out += [(f"{name}.{k}", v) for k, v in members.items()]
    return out


def test_help_on_any_public_python_object_says_what_it_is() -> None:
    """``help()`` renders the runtime docstring: for every exported object
    written in Python (wrappers, enums, dataclasses, TypedDicts) and its
    public methods it shows more than a signature."""
    objects = _exported(from_rust=False)
    assert len(objects) >= 25
    assert _bare_help(objects) == []


def test_help_on_any_public_rust_object_says_what_it_is() -> None:
    objects = _exported(from_rust=True)
    assert len(objects) >= 40
    assert _bare_help(objects) == []


# What each class's stats() is declared to return; checked against the stub
# and the wrappers' annotations below, so a new stats() cannot be left out.
STATS_TYPES: dict[str, type] = {
    "TelemetryProcessor": TelemetryProcessorStats,
    "PerformanceTarget": PerformanceTargetStats,
    "PrometheusTarget": PrometheusTargetStats,
    "ControlPlaneTracer": ControlPlaneTracerStats,
    "ReporterCore": NodeReporterStats,
    "NodeReporter": NodeReporterStats,
    "CollectorCore": CollectorCoreStats,
    "CollectorServer": OrchestratorCollectorStats,
    "OrchestratorCollector": OrchestratorCollectorStats,
}


def test_every_stats_method_returns_its_typeddict() -> None:
    declared: dict[str, str] = {}
    for cls_name, node in _stub_classes().items():
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "stats":
                assert item.returns is not None
                declared[cls_name] = ast.unparse(item.returns)
    for cls in (edgeless_telemetry.NodeReporter, edgeless_telemetry.OrchestratorCollector):
        declared[cls.__name__] = typing.get_type_hints(cls.stats)["return"].__name__
    assert declared == {name: td.__name__ for name, td in STATS_TYPES.items()}
    for td in set(STATS_TYPES.values()):
        assert td.__name__ in edgeless_telemetry.__all__
        assert getattr(edgeless_telemetry, td.__name__) is td


def _assert_keys(got: Mapping[str, object], td: Any, *, exact_optional: bool = False) -> None:
    required = set(td.__required_keys__)
    declared = required | set(td.__optional_keys__)
    assert type(got) is dict  # a plain dict at runtime: TypedDict is typing only
    assert all(type(v) is int for v in got.values()), got
    assert not required - set(got), f"{td.__name__}: declared required, not returned: {required - set(got)}"
    assert not set(got) - declared, f"{td.__name__}: returned, not declared: {set(got) - declared}"
    if exact_optional:
        assert set(got) == declared, f"{td.__name__}: declared, not returned: {declared - set(got)}"


def test_stats_keys_equal_the_declared_keys(tmp_path: Path) -> None:
    perf = edgeless_telemetry.PerformanceTarget()
    prom = edgeless_telemetry.PrometheusTarget("http://127.0.0.1:0")  # serving: its HTTP counts too
    try:
        proc = edgeless_telemetry.TelemetryProcessor([perf, prom])
        fn = proc.get_handle({"NODE_ID": "n1"}).fork(
            {"FUNCTION_ID": "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11", "FUNCTION_TYPE": "python"})
        fn.invocation_completed(0.003, event_type="CALL")
        fn.invocation_completed(float("nan"))  # counted, not raised
        _assert_keys(proc.stats(), TelemetryProcessorStats)
        assert proc.stats()["dropped_invalid_value"] == 1
        _assert_keys(perf.stats(), PerformanceTargetStats)
        _assert_keys(prom.stats(), PrometheusTargetStats)
        assert prom.stats()["execution_times_series"] == 1
    finally:
        prom.close()

    with edgeless_telemetry.ControlPlaneTracer(tmp_path / "trace.csv") as tracer:
        tracer.start_span("x").end()
        _assert_keys(tracer.stats(), ControlPlaneTracerStats)

    # Port 9 (discard) on loopback: nothing is sent, nothing started.
    reporter = edgeless_telemetry.NodeReporter(perf, "http://127.0.0.1:9", "n1")
    _assert_keys(reporter.stats(), NodeReporterStats)
    core = _core.ReporterCore(perf, "http://127.0.0.1:9", "n1")
    _assert_keys(core.stats(), NodeReporterStats)

    # Without Redis: no redis_* key (they are the optional ones).
    collector = edgeless_telemetry.OrchestratorCollector(
        "http://127.0.0.1:0", dataset_path=str(tmp_path / "plain_"))
    try:
        got = collector.stats()
        _assert_keys(got, OrchestratorCollectorStats)
        assert not any(k.startswith("redis_") for k in got)
        assert set(got) == set(OrchestratorCollectorStats.__required_keys__)
    finally:
        collector.stop(0.5)
    plain = _core.CollectorCore(dataset_path=str(tmp_path / "core_"))
    try:
        _assert_keys(plain.stats(), CollectorCoreStats)
        assert set(plain.stats()) == set(CollectorCoreStats.__required_keys__)
    finally:
        plain.close(0.5)


def test_stats_keys_with_redis_are_all_the_declared_ones(redis_server: RedisServer) -> None:
    collector = edgeless_telemetry.OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_server.url)
    try:
        _assert_keys(collector.stats(), OrchestratorCollectorStats, exact_optional=True)
    finally:
        collector.stop(1.0)
    core = _core.CollectorCore(redis_url=redis_server.url)
    try:
        _assert_keys(core.stats(), CollectorCoreStats, exact_optional=True)
    finally:
        core.close(1.0)


USER_CODE = """\
from edgeless_telemetry import (
    ControlPlaneTracer, NodeReporter, OrchestratorCollector, PerformanceTarget,
    PrometheusTarget, TelemetryProcessor, TelemetryProcessorStats,
)

perf = PerformanceTarget()
prom = PrometheusTarget("")
proc = TelemetryProcessor([perf, prom])
n: int = proc.stats()["dropped_invalid_type"]
s: TelemetryProcessorStats = proc.stats()
dropped: int = perf.stats()["samples_dropped"] + s["lossy_strings"]
series: int = prom.stats()["execution_times_series"]


def collector_line(c: OrchestratorCollector) -> str:
    st = c.stats()
    return f"{st['batches_stored']} stored, redis failing since {st.get('redis_failing_since', 0)}"


def rows(t: ControlPlaneTracer) -> int:
    return t.stats()["rows_written"] + t.stats()["rows_dropped"]


def pending(r: NodeReporter) -> int:
    return r.stats()["pending_batches"]
"""

# Each line must be an error, with this error code.
USER_MISTAKES = {
    'bad1: int = proc.stats()["dropped_invalid_typo"]': "typeddict-item",
    'bad2: int = perf.stats()["samples_droped"]': "typeddict-item",
    'bad3: str = prom.stats()["scrapes"]': "assignment",
    'bad4: int = OrchestratorCollector("http://127.0.0.1:0").stats()["redis_failing_snce"]': "typeddict-item",
}


def test_mypy_strict_checks_stats_keys_in_user_code(tmp_path: Path) -> None:
    good = tmp_path / "user_good.py"
    good.write_text(USER_CODE)
    bad = tmp_path / "user_bad.py"
    bad.write_text(USER_CODE + "\n" + "\n".join(USER_MISTAKES) + "\n")
    first_mistake_line = USER_CODE.count("\n") + 2
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--show-error-codes", "--no-error-summary",
         "--cache-dir", str(tmp_path / ".mypy_cache"), good.name, bad.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    out = result.stdout + result.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("user_good.py")], out
    bad_errors = [e for e in errors if e.startswith("user_bad.py")]
    # The user code itself is clean in the bad file too: only the mistakes fail.
    lines_with_errors = {int(e.split(":")[1]) for e in bad_errors}
    assert lines_with_errors == set(range(first_mistake_line, first_mistake_line + len(USER_MISTAKES))), out
    for offset, code in enumerate(USER_MISTAKES.values()):
        line = first_mistake_line + offset
        assert any(e.split(":")[1] == str(line) and f"[{code}]" in e for e in bad_errors), (line, code, out)
    assert result.returncode == 1, out


def test_stub_docstrings_are_not_placeholders() -> None:
    """The docstrings say something: none is a bare restatement of its name."""
    tree = ast.parse(STUB.read_text())
    thin = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and _public(node.name):
            doc = ast.get_docstring(node) or ""
            if len(textwrap.dedent(doc).split()) < 3:
                thin.append(node.name)
    assert thin == []
