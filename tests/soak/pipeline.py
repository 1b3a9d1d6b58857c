"""The soak's two workspaces ("lanes") and one attempt of the training pipeline on one of them, in-process.

- ``local``: a local-directory workspace on the soak's tmpfs (the full-disk fault fills it) and the whole pipeline:
  ingest → validate → features → materialize → training set → train → evaluate → deploy.
- ``s3``: an S3 workspace on moto_server behind the fault proxy (kfloop's storage and Feast's registry both go
  through it). The training-set step's point-in-time join reads S3 through DuckDB's httpfs extension, which is
  downloaded at run time and cannot be here, so this lane runs ingest → validate → features → materialize on its
  own lake, then train → evaluate on the local lane's newest training set, copied in unfaulted before the run.

Both use the real redis-server as the online store (one Feast project per lane). The steps are the product's
stage functions (the same ones the pipeline components' entrypoints call), run in this process; the SIGKILL
fault runs one of them through its component entrypoint in a subprocess instead (killed_step.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kfloop import layout
from kfloop.components.deploy import deploy_champion
from kfloop.components.evaluate import evaluate_and_gate
from kfloop.components.features import compute_features
from kfloop.components.ingest import ingest
from kfloop.components.materialize import materialize
from kfloop.components.train import train_and_register
from kfloop.components.training_set import build_training_set
from kfloop.components.validate import validate
from kfloop.config import Config, load_config, parse_config
from kfloop.errors import KfloopError
from kfloop.storage import Storage
from tests.soak.data import Batch
from tests.soak.wrappers import Counting

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "kfloop.yaml"
LOCAL_STEPS = ("ingest", "validate", "features", "materialize", "training_set", "train", "evaluate", "deploy")
S3_STEPS = ("ingest", "validate", "features", "materialize", "train", "evaluate")
MODEL = "soak-model"


def soak_config(lane: str, storage: dict, redis_address: str) -> Config:
    """The demo config, shrunk: tiny contract minimum, the smallest network, two epochs, a gate every model passes
    (the soak is about what survives faults, not about model quality); Redis as the online store."""
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["project"] = f"soak-{lane}"
    data["storage"] = storage
    data["contract"]["min_rows"]["value"] = 1
    data["features"]["online_store"] = {"type": "redis", "connection_string": redis_address}
    training = data["training"]
    training.update(model_name=MODEL, hidden_units=[8], embedding_dim=2, epochs=2, batch_size=64)
    training.update(early_stopping_patience=1)
    training["gate"].update(min_roc_auc=0.0, min_pr_auc=0.0, tolerance=1.0)
    return parse_config(data, f"soak config ({lane})")


@dataclass
class Lane:
    """One workspace the soak drives, and the batches it was given."""

    name: str
    config: Config
    direct: Storage  # no faults: set-up and invariant checks
    storage: Storage  # what the pipeline uses (through the proxy for s3; on the tmpfs for local)
    environ: dict[str, str]  # a step subprocess's extra environment
    steps: tuple[str, ...]
    counting: Counting = field(init=False)
    batches: list[Batch] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.counting = Counting(self.storage)


class StepFailedError(Exception):
    """An attempt stopped at ``step`` with ``error``."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{step}: {type(error).__name__}: {error}")
        self.step = step
        self.error = error


def _validated(config: Config, storage: Storage) -> None:
    result = validate(config, storage)
    if not result.report.gate_passed:
        failing = [c.check for c in result.report.checks if c.severity == "error" and not c.passed]
        raise KfloopError(f"data contract gate failed: {', '.join(failing)}")


def _step(lane: Lane, name: str, storage: Storage, batch: Batch, label: str, outputs: dict) -> None:
    config, environ = lane.config, lane.environ
    if name == "ingest":
        ingest(config, storage, source_uri=str(batch.path))
    elif name == "validate":
        _validated(config, storage)
    elif name == "features":
        compute_features(config, storage)
    elif name == "materialize":
        materialize(config, storage, environ)
    elif name == "training_set":
        build_training_set(config, storage, environ)
    elif name == "train":
        outputs["version"] = train_and_register(config, storage, pipeline_run=label)["version"]
    elif name == "evaluate":
        outputs["decision"] = evaluate_and_gate(config, storage, outputs["version"])
    elif name == "deploy":
        outputs["deploy"] = deploy_champion(config, storage)
    else:
        raise ValueError(f"unknown step {name!r}")


def run_attempt(
    lane: Lane,
    batch: Batch,
    label: str,
    *,
    wrap: Callable[[Storage], Storage] = lambda s: s,
    before: Mapping[str, Callable[[], None]] | None = None,
    instead: Mapping[str, Callable[[dict], None]] | None = None,
) -> dict:
    """One attempt of the pipeline on ``batch``; raises StepFailedError naming the step that failed. ``wrap`` puts a
    fault around the lane's storage, ``before[step]`` runs before a step, ``instead[step]`` replaces it."""
    outputs: dict = {}
    storage = wrap(lane.counting)
    for name in lane.steps:
        lane.counting.step = name
        try:
            if before and name in before:
                before[name]()
            if instead and name in instead:
                instead[name](outputs)
            else:
                _step(lane, name, storage, batch, label, outputs)
        except Exception as err:
            raise StepFailedError(name, err) from err
        finally:
            lane.counting.step = ""
    return outputs


def hand_over_training_set(source: Lane, target: Lane) -> bool:
    """Copy ``source``'s newest training set into ``target`` (unfaulted set-up); False if it has none."""
    service = source.config.features.service
    latest = layout.latest_key(layout.training_set_prefix(service))
    try:
        body = source.direct.read_bytes(latest)
    except FileNotFoundError:
        return False
    run_id = json.loads(body)["run_id"]
    for split in layout.SPLITS:
        key = layout.split_key(service, run_id, split)
        target.direct.write_bytes(key, source.direct.read_bytes(key))
    manifest = layout.training_set_manifest_key(service, run_id)
    target.direct.write_bytes(manifest, source.direct.read_bytes(manifest))
    target.direct.write_bytes(latest, body)
    return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: kfp.local starts each task as a shell that runs Python)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _task_process(step: str) -> int | None:
    """The Python process of the kfp.local task running ``step`` (its ``--function_to_execute``), if any."""
    wanted = f"{step}_component".encode()
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            if (
                b"--function_to_execute" in argv
                and wanted in argv
                and b"python" in Path(argv[0].decode()).name.encode()
            ):
                return pid
    return None


@dataclass
class KfpKill:
    """SIGKILL the kfp.local task of ``step`` ``delay_s`` after it started; ``killed`` says whether it was."""

    step: str
    delay_s: float
    killed: bool = False
    note: str = ""

    def watch(self, done: threading.Event) -> None:
        pid = None
        while pid is None and not done.wait(0.05):
            pid = _task_process(self.step)
        if pid is None:
            self.note = f"{self.step} task never started"
            return
        if done.wait(self.delay_s):
            self.note = f"{self.step} task: the run ended first"
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            self.note = f"{self.step} task finished within {self.delay_s:.1f} s: not killed"
            return
        self.killed = True
        self.note = f"kfp.local task {self.step} (pid {pid}) killed (SIGKILL) {self.delay_s:.1f} s after it started"


def run_kfp_local(lane: Lane, batch: Batch, workdir: Path, kill: KfpKill | None = None) -> None:
    """One attempt through the real local runner (``kfloop run``: kfp.local, every step a subprocess), with the task
    of ``kill.step`` SIGKILLed while it runs; raises StepFailedError("kfp.local", …) when the run fails."""
    from kfloop.pipelines.local import project_python_on_path, run_local

    project_python_on_path()
    done = threading.Event()
    watcher = threading.Thread(target=kill.watch, args=(done,), daemon=True) if kill else None
    if watcher:
        watcher.start()
    try:
        run_local(lane.config, workdir, source_uri=str(batch.path))
    except Exception as err:
        raise StepFailedError("kfp.local", err) from err
    finally:
        done.set()
        if watcher:
            watcher.join()
