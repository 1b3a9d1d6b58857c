"""The SIGKILL fault: one pipeline step run through its component entrypoint (``run_<step>_step``, what a kfp task
runs) in a subprocess, which the soak kills with SIGKILL at a storage write drawn at random.

The child wraps the workspace storage its entrypoint opens (``kfloop.step.open_step``) so that right before its
``pause_at``-th write it prints ``PAUSED n op key`` and waits; the parent then sends SIGKILL. A step that finishes
before that write prints ``DONE n`` (its number of writes) instead.

Child: ``python -m tests.soak.killed_step SPEC.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class KillOutcome:
    """What happened to the step: killed at write ``at`` (``op`` on ``key``), or finished after ``writes``."""

    killed: bool
    at: int
    op: str = ""
    key: str = ""
    writes: int = 0
    seconds: float = 0.0
    result: dict | None = None  # what a step that was not killed returned (JSON-able)

    def describe(self, step: str) -> str:
        if self.killed:
            return f"{step} killed (SIGKILL) before write {self.at} ({self.op} {self.key})"
        return f"{step} finished after {self.writes} writes, before write {self.at}: not killed"


def run_killed(step: str, config_json: str, pause_at: int, args: dict, environ: dict[str, str]) -> KillOutcome:
    """Run ``step`` in a subprocess and SIGKILL it before its ``pause_at``-th write."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kfloop-soak-kill-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"step": step, "config_json": config_json, "pause_at": pause_at, "args": args}))
        env = {**os.environ, **environ, "PYTHONPATH": str(REPO)}
        errors = Path(tmp) / "stderr.log"  # a file, not a pipe: a chatty step must never block on it
        with open(errors, "w") as err_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.soak.killed_step", str(spec)],
                cwd=tmp,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err_fh,
                text=True,
            )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("PAUSED "):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                if proc.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"{step}: expected exit by SIGKILL, got {proc.returncode}")
                _, n, op, key = line.split(maxsplit=3)
                return KillOutcome(True, int(n), op, key.strip(), seconds=time.monotonic() - t0)
            if line.startswith("DONE "):
                _, n, result = line.split(maxsplit=2)
                proc.wait(timeout=60)
                return KillOutcome(
                    False, pause_at, writes=int(n), seconds=time.monotonic() - t0, result=json.loads(result)
                )
        proc.wait(timeout=60)
        err = errors.read_text(errors="replace").strip().splitlines()
        raise RuntimeError(f"{step} subprocess exited {proc.returncode}: {err[-1] if err else 'no output'}")


def _entrypoint(step: str, config_json: str, args: dict, out: Path) -> dict:
    """The component entrypoint of ``step``, with its artifacts written into ``out``; what the next steps need."""
    if step == "ingest":
        from kfloop.components.ingest import run_ingest_step

        run_ingest_step(config_json, args["source_uri"], str(out / "run.json"), str(out / "quarantine.parquet"))
    elif step == "validate":
        from kfloop.components.validate import run_validate_step

        result = run_validate_step(
            config_json, str(out / "report.json"), str(out / "quarantine.parquet"), str(out / "clean.json")
        )
        if not result.report.gate_passed:
            raise SystemExit("data contract gate failed")
    elif step == "features":
        from kfloop.components.features import run_features_step

        run_features_step(config_json)
    elif step == "materialize":
        from kfloop.components.materialize import run_materialize_step

        run_materialize_step(config_json)
    elif step == "training_set":
        from kfloop.components.training_set import run_training_set_step

        run_training_set_step(config_json)
    elif step == "train":
        from kfloop.components.train import run_train_step

        return {"version": run_train_step(config_json, args["pipeline_run"])["version"]}
    elif step == "evaluate":
        from kfloop.components.evaluate import run_evaluate_step

        run_evaluate_step(config_json, args["version"])
    else:
        raise SystemExit(f"no killable step {step!r}")
    return {}


def main(spec_path: str) -> None:
    import kfloop.step
    from tests.soak.wrappers import PauseAt

    spec = json.loads(Path(spec_path).read_text())
    opened: list[PauseAt] = []
    open_storage = kfloop.step.open_storage

    def pausing(cfg, creds=None):  # type: ignore[no-untyped-def]
        opened.append(PauseAt(open_storage(cfg, creds), spec["pause_at"]))
        return opened[-1]

    kfloop.step.open_storage = pausing  # type: ignore[assignment]
    result = _entrypoint(spec["step"], spec["config_json"], spec["args"], Path(spec_path).parent)
    print(f"DONE {sum(p.seen for p in opened)} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
