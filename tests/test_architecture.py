"""The package boundaries of DESIGN.md and the public names, pinned so a change to either is deliberate."""

from __future__ import annotations

import ast
from pathlib import Path

import durable
import durable.testing
import history
import replay

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level modules each file of ``package`` imports (relative imports excluded)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_dependencies_point_one_way() -> None:
    for path, names in _imports("history").items():
        assert not names & {"replay", "durable"}, f"{path} imports {names & {'replay', 'durable'}}"
    for path, names in _imports("replay").items():
        assert "durable" not in names, f"{path} imports durable"


def test_third_party_libraries_are_each_imported_in_one_place() -> None:
    every = {**_imports("history"), **_imports("replay"), **_imports("durable")}
    assert sorted(p for p, names in every.items() if "asyncpg" in names) == ["history/_postgres.py"]
    # STYLE.md: OpenTelemetry in one module of durable/ (and never in replay/ or history/: replay emits no spans).
    assert sorted(p for p, names in every.items() if "opentelemetry" in names) == ["durable/_telemetry.py"]
    assert not [p for p, names in every.items() if "pickle" in names]


def test_replay_runs_without_the_worker_or_a_database() -> None:
    # replay/ imports history only; history's own imports stay free of the worker and the network.
    for path, names in _imports("replay").items():
        assert not names & {"asyncpg", "sqlite3", "anyio", "socket"}, path


def test_public_names_are_pinned() -> None:
    assert durable.__all__ == sorted(durable.__all__)
    assert set(durable.__all__) == {
        "Cancelled", "ChildHandle", "ChildWorkflowFailed", "InputAlreadyProvided", "InputNotPending",
        "InputValidationError", "PendingInput", "QueueConfig", "QueueStats", "Queues", "RunAlreadyFinished",
        "WaitTimeout", "WorkflowTimeout", "LogLimits", "LogLine",
        "CleanupReport", "Retention", "RunMetrics",
        "RunEvent", "Subscription",  # live events (engine.subscribe)
        "DatabaseUnavailable", "DurableError", "Engine", "Execution", "ExecutionPage", "HistoryConflict",
        "HistoryFileError", "LeaseLost", "NonDeterminismError", "NonRetryableError", "PayloadError",
        "PayloadTooLarge", "ResultTimeout", "Retry", "RunHandle", "RunNotFound", "SchemaError", "Step",
        "StepFailed", "StepInfo", "StepView", "StoreError", "UnknownWorkflowError", "Worker", "Workflow",
        "WorkflowCancelled", "WorkflowCodeError", "WorkflowContext", "WorkflowFailed", "__version__",
        "current_step", "registered_workflows", "step", "unsafe_nondeterminism", "workflow",
    }  # fmt: skip
    assert replay.__all__ == sorted(replay.__all__)
    assert history.__all__ == sorted(history.__all__)
    for module in (durable, replay, history):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"


def test_errors_form_one_tree_under_durable_error() -> None:
    for name in durable.errors.__all__:
        error = getattr(durable.errors, name)
        outside_the_tree = (durable.NonRetryableError, durable.Cancelled)  # raised by users' code / asyncio's
        assert issubclass(error, durable.DurableError) or error in outside_the_tree, name


def test_errors_are_recorded_under_the_names_users_import() -> None:
    """An error recorded in a history is named ``durable.<Name>``: every public exception of the modules that
    name covers is exported from ``durable`` as that very class, so the recorded name always resolves."""
    import importlib

    from replay._instance import PUBLIC_ERROR_MODULES, recorded_type_name

    for module_name in sorted(PUBLIC_ERROR_MODULES):
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module_name:
                if name.startswith("_"):
                    assert recorded_type_name(value) == f"{module_name}.{name}"
                    continue
                assert recorded_type_name(value) == f"durable.{name}"
                assert getattr(durable, name, None) is value, f"{module_name}.{name} is not exported as durable.{name}"
    assert recorded_type_name(ValueError) == "ValueError"
    assert recorded_type_name(durable.testing.RunBlocked) == "durable.testing.RunBlocked"


def test_names_recorded_by_earlier_versions_compare_equal_to_today_s() -> None:
    from replay import canonical_error_type

    assert canonical_error_type("durable.errors.StepFailed") == "durable.StepFailed"
    assert canonical_error_type("replay._errors.WaitTimeout") == "durable.WaitTimeout"
    assert canonical_error_type("history._errors.PayloadError") == "durable.PayloadError"
    for name in ("durable.StepFailed", "ValueError", "myapp.errors.StepFailed", "durable.testing.RunBlocked"):
        assert canonical_error_type(name) == name
