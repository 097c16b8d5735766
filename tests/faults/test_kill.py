"""Random SIGKILLs of a training process running ckpt + tflite (a tiny model).

Trials: ``CVML_KILL_TRIALS`` (default 20, the CI run), seed ``CVML_KILL_SEED`` (default
0). The documented longer run::

    CVML_KILL_TRIALS=100 pytest tests/faults/test_kill.py -s

Each trial starts ``kill_child.py`` on a fresh ``log_dir`` (with its own ``TMPDIR``),
kills it at a seeded random moment after fit starts (tflite conversions are often in
flight), then checks:

* 0 processes left running: every conversion worker of the killed process (found by
  its command line ``cvml_tflite.worker_main --parent <pid>``) ends by itself. The
  wait is bounded only by the hang guard ``TRIAL_TIMEOUT``; how long the workers took
  is printed (the longest), never asserted;
* 0 files written after the kill: the folder's files and mtimes right after the kill
  and again once no process of the run is left (nothing can write after that);
* 0 unloadable files: every ``.keras`` loads, every ``.tflite`` allocates in LiteRT;
* 0 best regressions: the best per callback after the next start is never worse than
  the last one read from its manifest before the kill, and the resumed callback keeps it;
* 0 scratch folders left after the next run's start (``.tmp-*`` in the folders), and
  manifest and files agree;
* 0 trials whose private ``TMPDIR`` holds anything the project's processes made, once
  the next run has started: the conversion workers' temp directory is in the callback's
  ``.tmp-`` scratch folder, Keras' ``.keras`` save and load run with Python's temp
  directory there too (``cvml_core.artifacts.atomic.temp_files_in``), and the project's own
  ``tf.function``s use no autograph. An autograph source (``__autograph_generated_file*``)
  counts as TensorFlow's own, made for Keras or user code in the training process, only
  when none of the functions it converts is defined in the project's code (``tf__<name>``
  in the file against every function name in ``cvml_core`` and the plugins, and
  ``tf__lam`` for any lambda); those are counted and printed, not failed.

A summary line is printed (``-s``) and the test fails on any count above 0.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from faultlib import folder_state, manifest_problems, worker_pids

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
AUTOGRAPH = "__autograph_generated_file"
TRIALS = int(os.environ.get("CVML_KILL_TRIALS", "20"))
SEED = int(os.environ.get("CVML_KILL_SEED", "0"))
TRIAL_TIMEOUT = 120.0  # a guard against a hang, not a timing assertion
#: What the trials exercised, so that trials that exercise nothing cannot pass: the
#: child was running when killed, a ckpt manifest existed, a converter worker was seen.
EXERCISED = dict.fromkeys(("running_at_kill", "manifest", "converter_seen"), 0)


def _project_functions() -> set[str]:
    """Every function name defined in the project's code, and ``lam`` (autograph's name
    for a lambda)."""
    names = {"lam"}
    for path in [*ROOT.glob("cvml_core/*.py"), *ROOT.glob("plugins/*/cvml_*/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


PROJECT_FUNCTIONS = _project_functions()


def _tensorflows_own(path: Path) -> bool:
    """Whether ``path`` is an autograph source that converts none of the project's
    functions (TensorFlow's, for Keras or user code of the training process)."""
    if not (path.is_file() and path.name.startswith(AUTOGRAPH) and path.suffix == ".py"):
        return False
    converted = set(re.findall(r"\btf__(\w+)\b", path.read_text(errors="replace")))
    return bool(converted) and not converted & PROJECT_FUNCTIONS


def _best(folder: Path) -> float | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
        return data["basis"]["best"]["val_loss"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _trial(
    root: Path, delay: float, counts: dict[str, int], notes: list[str],
    ended_after: list[float], tensorflows: list[int],
) -> None:
    log_dir, tmpdir = root / "run", root / "tmp"
    tmpdir.mkdir(parents=True)
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(HERE / "kill_child.py"), str(log_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)
    before: dict[str, float | None] = {"ckpt": None, "tflite": None}
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "training"
        end = time.monotonic() + delay
        while time.monotonic() < end and proc.poll() is None:
            for name in before:
                value = _best(log_dir / name)
                if value is not None:
                    before[name] = value
            time.sleep(0.01)
        exited = proc.poll()
        assert exited is None, f"the child ended by itself (exit {exited}) before its kill"
        EXERCISED["running_at_kill"] += 1
        EXERCISED["converter_seen"] += bool(worker_pids(f"--parent {proc.pid}"))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TRIAL_TIMEOUT)
    killed_at = time.monotonic()
    after_kill = folder_state(log_dir)
    EXERCISED["manifest"] += (log_dir / "ckpt" / "manifest.json").exists()
    marker = f"--parent {proc.pid}"
    while worker_pids(marker) and time.monotonic() < killed_at + TRIAL_TIMEOUT:
        time.sleep(0.05)
    ended_after.append(time.monotonic() - killed_at)  # a figure to print, not to assert
    alive = worker_pids(marker)
    if alive:
        counts["alive"] += 1
        notes.append(f"workers still running {TRIAL_TIMEOUT:.0f} s after the kill: {alive}")
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
    later = folder_state(log_dir)
    changed = {k for k in set(after_kill) | set(later) if after_kill.get(k) != later.get(k)}
    if changed:
        counts["written"] += 1
        notes.append(f"written after the kill: {sorted(changed)}")

    # the next run's start
    import keras
    from ai_edge_litert.interpreter import Interpreter
    from cvml_ckpt import CkptCallback
    from cvml_tflite import TFLiteCallback

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    for cls, name in ((CkptCallback, "ckpt"), (TFLiteCallback, "tflite")):
        folder = log_dir / name
        if not (folder / "manifest.json").exists():
            continue
        cb = cls(log_dir, {"val_loss": "min"})
        cb.set_model(model)
        cb.on_train_begin({})
        now = _best(folder)
        if before[name] is not None and (now is None or now > before[name]):
            counts["regressions"] += 1
            notes.append(f"{name}: best {before[name]} before the kill, {now} after")
        if cb.policy.best["val_loss"].value != now:
            counts["regressions"] += 1
            notes.append(f"{name}: resumed best {cb.policy.best['val_loss']} vs {now}")
        problems = manifest_problems(folder)
        if problems:
            counts["mismatch"] += 1
            notes.append(f"{name}: {problems}")
        for path in folder.iterdir():
            try:
                if path.suffix == ".keras":
                    keras.models.load_model(path)
                elif path.suffix == ".tflite":
                    Interpreter(model_path=str(path)).allocate_tensors()
            except Exception as exc:  # noqa: BLE001 - counted
                counts["unloadable"] += 1
                notes.append(f"{path.name}: {type(exc).__name__}: {exc}")
        scratch = [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]
        if scratch:
            counts["scratch"] += 1
            notes.append(f"{name}: left {scratch}")
    left = sorted(tmpdir.iterdir())
    theirs = [p for p in left if _tensorflows_own(p)]
    made = [p.name for p in left if p not in theirs]
    tensorflows.append(len(theirs))
    if made:
        counts["tmpdir"] += 1
        inside = [str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")][:8]
        notes.append(f"TMPDIR: left {made} ({inside})")


def test_random_sigkills(tmp_path):
    rng = random.Random(SEED)
    EXERCISED.update(dict.fromkeys(EXERCISED, 0))
    counts = dict.fromkeys(
        ("unloadable", "regressions", "alive", "written", "scratch", "mismatch", "tmpdir"), 0)
    notes: list[str] = []
    ended_after: list[float] = []
    tensorflows: list[int] = []
    for trial in range(TRIALS):
        _trial(tmp_path / f"t{trial}", rng.uniform(0.2, 6.0), counts, notes, ended_after,
               tensorflows)
    summary = (f"kill trials={TRIALS} seed={SEED}: unloadable={counts['unloadable']} "
               f"best_regressions={counts['regressions']} left_running={counts['alive']} "
               f"written_after_kill={counts['written']} scratch_left={counts['scratch']} "
               f"manifest_mismatch={counts['mismatch']} tmpdir_left={counts['tmpdir']} "
               f"(TensorFlow's own autograph files left in {sum(map(bool, tensorflows))} "
               f"trials, {sum(tensorflows)} in all; workers gone at most "
               f"{max(ended_after, default=0.0):.1f} s after a kill)")
    print("\n" + summary)
    print(f"exercised: {EXERCISED} of {TRIALS} trials")
    assert EXERCISED["running_at_kill"] == TRIALS, EXERCISED
    assert EXERCISED["manifest"] and EXERCISED["converter_seen"], EXERCISED
    assert not any(counts.values()), summary + "\n" + "\n".join(notes[:20])
