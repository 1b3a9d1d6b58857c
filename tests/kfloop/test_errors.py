"""One error map: every project error descends from KfloopError, is defined in kfloop/errors.py (or is a private
signal of one module), and gets its HTTP status, gRPC status and CLI exit code from one table by its MRO."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

import grpc
import kserve.errors
import pytest

from kfloop import errors
from kfloop.errors import STATUSES, KfloopError, Status, status_of
from tests.conftest import REPO

#: The folders that install as the kfloop package.
ROOTS = ("kfloop", "components", "pipelines", "feature_repo", "serving", "monitoring")
#: Internal signals that never leave their module (caught where they are raised).
PRIVATE_SIGNALS = {("kfloop/storage/s3.py", "_ConflictError"), ("serving/champion.py", "_RefusedError")}
PROJECT = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, KfloopError)}
BUILTIN = {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)}
KSERVE = {name for name, obj in vars(kserve.errors).items() if isinstance(obj, type) and issubclass(obj, BaseException)}


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _exception_classes() -> Iterator[tuple[str, str, list[str]]]:
    """(file, class, base names) of every class in the package's source that is an exception by its name
    or its bases (read from the source: importing every module would load torch, TensorFlow, kfp …)."""
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                if node.name.endswith(("Error", "Exception")) or set(bases) & (BUILTIN | KSERVE | PROJECT):
                    yield str(path.relative_to(REPO)), node.name, bases


def test_project_errors_are_defined_in_kfloop_errors_and_subclass_kfloop_error() -> None:
    found = list(_exception_classes())
    assert {(f, c) for f, c, _ in found} >= PRIVATE_SIGNALS | {("kfloop/errors.py", "KfloopError")}  # scan works
    for file, name, bases in found:
        if (file, name) in PRIVATE_SIGNALS or (file, name) == ("kfloop/errors.py", "KfloopError"):
            continue
        assert file == "kfloop/errors.py" or name.startswith("_"), f"{file}: {name} belongs in kfloop/errors.py"
        assert bases and set(bases) <= PROJECT, f"{file}: {name}({', '.join(bases)}) must subclass a KfloopError"
        assert not set(bases) & (KSERVE | BUILTIN), f"{file}: {name} subclasses a KServe or builtin error"


def test_every_project_error_answers_through_the_one_mapping() -> None:
    classes = [KfloopError, *_subclasses(KfloopError)]
    assert {c.__name__ for c in classes if c.__module__ == "kfloop.errors"} == PROJECT
    for cls in classes:
        status = status_of(cls)
        assert status == next(STATUSES[k] for k in cls.__mro__ if k in STATUSES)
        assert 400 <= status.http < 600 and status.exit_code in (1, 2), cls
        assert status.grpc in grpc.StatusCode.__members__ and status.grpc != "OK", cls
        if cls is not KfloopError:  # the statuses live in the table only, not as class attributes
            assert not {"http_status", "grpc_status", "exit_code"} & set(vars(cls)), cls
    assert all(k is KfloopError or issubclass(k, KfloopError) for k in STATUSES)
    with pytest.raises(TypeError):
        status_of(ValueError)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (errors.RequestError, Status(400, "INVALID_ARGUMENT", 1)),
        (errors.BadEventError, Status(400, "INVALID_ARGUMENT", 1)),
        (errors.ConfigError, Status(400, "INVALID_ARGUMENT", 2)),
        (errors.UnknownEntityError, Status(404, "NOT_FOUND", 1)),
        (errors.ModelNotFoundError, Status(404, "NOT_FOUND", 1)),
        (errors.PayloadTooLargeError, Status(413, "INVALID_ARGUMENT", 1)),
        (errors.SourceError, Status(422, "INVALID_ARGUMENT", 1)),
        (errors.GateFailedError, Status(422, "FAILED_PRECONDITION", 1)),
        (errors.SchemaChangeError, Status(422, "FAILED_PRECONDITION", 1)),
        (errors.StorageError, Status(503, "UNAVAILABLE", 1)),
        (errors.LeaseBusyError, Status(503, "UNAVAILABLE", 1)),
        (errors.LeaseLostError, Status(503, "UNAVAILABLE", 1)),
        (errors.OnlineStoreUnavailableError, Status(503, "UNAVAILABLE", 1)),
        (errors.PredictorUnavailableError, Status(503, "UNAVAILABLE", 1)),
        (errors.NotReadyError, Status(503, "UNAVAILABLE", 1)),
        (errors.NoChampionError, Status(503, "UNAVAILABLE", 2)),
        (errors.DeployError, Status(502, "UNAVAILABLE", 1)),
        (errors.FeatureLookupError, Status(500, "INTERNAL", 1)),
        (errors.CorruptModelError, Status(500, "DATA_LOSS", 1)),
        (errors.PipelineError, Status(500, "INTERNAL", 1)),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_statuses(cls: type[KfloopError], expected: Status) -> None:
    assert status_of(cls) == expected
    err = cls.__new__(cls)
    assert (err.http_status, err.grpc_status, err.exit_code) == expected


def test_metrics_label_grpc_calls_by_the_same_mapping() -> None:
    from kfloop.serving.metrics import grpc_status

    for cls in [KfloopError, *_subclasses(KfloopError)]:
        assert grpc_status(cls.__new__(cls)) == status_of(cls).grpc, cls
    assert grpc_status(kserve.errors.InvalidInput("bad")) == "INVALID_ARGUMENT"  # KServe's own: as KServe answers
    assert grpc_status(None) == "OK"


def test_serving_errors_keep_the_messages_clients_saw() -> None:
    assert str(errors.NotReadyError("m", "refused (inputs)")) == "Model with name m is not ready. refused (inputs)"
    assert str(errors.OnlineStoreUnavailableError("online store unreachable: x")) == (
        "Server is not ready. online store unreachable: x"
    )
    assert str(errors.RequestError("missing field 'instances'")) == "missing field 'instances'"
    chained = errors.StorageError("s3://b/k: unreachable")
    chained.__cause__ = ConnectionResetError(104, "reset")
    assert str(chained) == "s3://b/k: unreachable"  # the cause is for --debug and the logs, not the message


def test_the_errors_module_imports_without_grpc_or_kserve() -> None:
    source = Path(errors.__file__).read_text(encoding="utf-8")
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__", "typing"}
