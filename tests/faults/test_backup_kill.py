"""Random SIGKILLs of a run that backs up every few steps, then a resume at the step.

Trials: ``CVML_BACKUP_TRIALS`` (default 20, the CI run), seed ``CVML_KILL_SEED``
(default 0). The documented longer run::

    CVML_BACKUP_TRIALS=100 pytest tests/faults/test_backup_kill.py -s

Each runner (``backup_workload.RUNNERS``: a plain ``model.fit`` on arrays, ``TrainInfer``
on arrays, ``TrainInfer`` on a seeded ``tf.data`` shuffle) has its trials. Each trial
starts ``backup_child.py`` (ckpt with ``backup_every_steps=3``, a tiny model with
dropout, 4 epochs of 8 steps) on a fresh ``log_dir``; the child SIGKILLs itself at the
end of a seeded random training step. This process then checks the folder and resumes
the run with a new model and callback, trained the same way:

* 0 unloadable files: every ``.keras`` loads, ``backup.weights.h5`` loads into the model;
* 0 best regressions: the resumed callback's best is the one the manifest held at the kill;
* steps lost (the step of the kill minus the manifest's backup step) <= the interval,
  plus the batches at which a backup write was still in flight (then a due backup is
  deferred, never queued; the child prints that, batch by batch);
* the resumed fit starts at the backup's epoch and step and ends with the optimizer's
  iteration count of a run never interrupted, and no backup left;
* final weights bitwise equal to a run never interrupted (on TensorFlow's CPU kernels
  this tiny model needs no op determinism, which TensorFlow cannot turn off again in
  this process once on).

A summary line is printed (``-s``) and the test fails on any count above 0.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from backup_workload import BASIS, EPOCHS, INTERVAL, RUNNERS, STEPS, build, data, fit
from faultlib import manifest_problems

HERE = Path(__file__).parent
TRIALS = int(os.environ.get("CVML_BACKUP_TRIALS", "20"))
SEED = int(os.environ.get("CVML_KILL_SEED", "0"))
TRIAL_TIMEOUT = 300  # a guard against a hang, not a timing assertion


class _Children:
    """``backup_child.py``: imports Keras once, forks a training child per trial."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "backup_child.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def run(self, log_dir: Path, kill_at: int, runner: str) -> list[tuple[int, int]]:
        """Train in a child until it kills itself; its ``(step, busy)`` lines."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{log_dir} {kill_at} {runner}\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            words = self.readline().split()
            assert words, "backup_child.py ended"
            if words[0] == "killed":
                assert words[1] == str(-signal.SIGKILL), words
                return lines
            if words[0] == "step":
                lines.append((int(words[1]), int(words[3])))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=TRIAL_TIMEOUT)


def _trial(
    children: _Children, log_dir: Path, kill_at: int, runner: str,
    reference: list[np.ndarray], tally: dict,
) -> None:
    import keras
    from cvml_ckpt import CkptCallback

    lines = children.run(log_dir, kill_at, runner)
    folder = log_dir / "ckpt"
    manifest = folder / "manifest.json"  # none yet when killed before any write
    state = json.loads(manifest.read_text()) if manifest.exists() else {"basis": None,
                                                                         "current": []}
    best_before = (state["basis"] or {}).get("best", {}).get("val_loss", {}).get("value")
    for path in folder.iterdir() if folder.exists() else []:
        try:
            if path.name.endswith(".keras") and not path.name.startswith(".tmp-"):
                keras.models.load_model(path)
            elif path.name == "backup.weights.h5":
                probe = build()
                probe.optimizer.build(probe.trainable_variables)
                probe.load_weights(path)
        except Exception as exc:  # noqa: BLE001 - counted
            tally["unloadable"] += 1
            tally["notes"].append(f"{path.name}: {type(exc).__name__}: {exc}")

    cb = CkptCallback(log_dir, BASIS, backup_every_steps=INTERVAL)  # finishes a publish
    now = cb.policy.best["val_loss"].value
    if best_before is not None and (now is None or now > best_before):
        tally["regressions"] += 1
        tally["notes"].append(f"best {best_before} at the kill, {cb.policy.best['val_loss']}")
    backups = [e for e in cb.current_artifacts() if e["kind"] == "backup"]  # recovered
    expected = None
    if backups:
        d = backups[-1]["details"]
        expected = (d["epoch_index"], d["step"])
    saved = backups[-1]["details"]["iterations"] if backups else 0
    reached = lines[-1][0]
    busy = sum(b for s, b in lines if s > saved)
    lost = reached - saved
    tally["max_lost"] = max(tally["max_lost"], lost)
    if lost > INTERVAL + busy:
        tally["lost_over"] += 1
        tally["notes"].append(f"kill at {reached}: backup of step {saved}, {busy} busy")
    if busy:
        tally["busy_trials"] += 1

    model = build()
    fit(model, data(), EPOCHS, [cb], runner=runner)
    if cb.resumed_from != expected:
        tally["wrong_start"] += 1
        tally["notes"].append(f"resumed from {cb.resumed_from}, backup {expected}")
    if int(model.optimizer.iterations.numpy()) != STEPS:
        tally["iterations"] += 1
        tally["notes"].append(f"{int(model.optimizer.iterations.numpy())} iterations")
    if (folder / "backup.weights.h5").exists():
        tally["backup_left"] += 1
    problems = manifest_problems(folder)
    if problems:
        tally["mismatch"] += 1
        tally["notes"].append(str(problems))
    if all(np.array_equal(a, b) for a, b in zip(model.get_weights(), reference, strict=True)):
        tally["bitwise_equal"] += 1


@pytest.mark.parametrize("runner", RUNNERS)
def test_random_sigkills_then_resume_at_the_step(tmp_path, runner):
    model = build()
    fit(model, data(), EPOCHS, [], runner=runner)
    reference = model.get_weights()
    assert int(model.optimizer.iterations.numpy()) == STEPS

    rng = random.Random(SEED)
    tally: dict = dict.fromkeys(
        ("unloadable", "regressions", "lost_over", "wrong_start", "iterations",
         "backup_left", "mismatch", "max_lost", "busy_trials", "bitwise_equal"), 0)
    tally["notes"] = []
    children = _Children()
    try:
        for trial in range(TRIALS):
            _trial(children, tmp_path / f"t{trial}", rng.randint(1, STEPS - 1), runner,
                   reference, tally)
    finally:
        children.close()
    failures = ("unloadable", "regressions", "lost_over", "wrong_start", "iterations",
                "backup_left", "mismatch")
    summary = (f"backup kill {runner} trials={TRIALS} seed={SEED} interval={INTERVAL}: "
               + " ".join(f"{k}={tally[k]}" for k in failures)
               + f" (max steps lost {tally['max_lost']}, trials with a write in flight "
               f"{tally['busy_trials']}, final weights bitwise equal "
               f"{tally['bitwise_equal']}/{TRIALS})")
    print("\n" + summary)
    assert not any(tally[k] for k in failures), summary + "\n" + "\n".join(tally["notes"][:20])
    assert tally["bitwise_equal"] == TRIALS, summary
