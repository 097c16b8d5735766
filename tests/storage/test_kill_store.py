"""Faults with log_dir on S3 (SeaweedFS): the trainer SIGKILLed at random moments, and
the store's own process killed while a checkpoint uploads, then restarted.

After the next start: no partial object under a final name (every ``.keras`` and
``.tflite`` object loads), no best regression, no pending entry, no ``.tmp-`` object,
the manifest names exactly the objects, and the killed process' local staging folders
are gone. Trials: ``CVML_STORE_KILL_TRIALS`` (default
10, the CI run), seed ``CVML_KILL_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from servers import SeaweedS3

from cvml_core.artifacts.manifest import HISTORY_NAME, MANIFEST_NAME, read_manifest
from cvml_core.artifacts.remote_store import STAGING_PREFIX
from cvml_core.artifacts.storage import open_store

CHILD = Path(__file__).parents[1] / "faults" / "kill_child.py"
TRIALS = int(os.environ.get("CVML_STORE_KILL_TRIALS", "10"))
SEED = int(os.environ.get("CVML_KILL_SEED", "0"))
TRIAL_TIMEOUT = 120.0  # a guard against a hang, not a timing assertion


def _best(store) -> float | None:
    try:
        data = json.loads(store.read_bytes(MANIFEST_NAME))
        return data["basis"]["best"]["val_loss"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_problems(store) -> list[str]:
    """How a callback folder on a store and its manifest disagree (empty: they agree)."""
    state = json.loads(store.read_bytes(MANIFEST_NAME))
    record = read_manifest(store)
    objects = store.names() - {MANIFEST_NAME, HISTORY_NAME}
    named = {a["path"].rsplit("/", 1)[-1] for a in record["artifacts"]}
    current = {a["path"].rsplit("/", 1)[-1] for a in state["current"]}
    problems = []
    if state.get("pending"):
        problems.append(f"pending left: {state['pending']}")
    if temps := sorted(n for n in objects if n.startswith(".tmp-")):
        problems.append(f".tmp- objects: {temps}")
    if unnamed := sorted(objects - named - {n for n in objects if n.startswith(".tmp-")}):
        problems.append(f"objects the manifest does not name: {unnamed}")
    if missing := sorted(current - objects):
        problems.append(f"named but missing: {missing}")
    return problems


def _loads(store, name) -> str | None:
    import keras
    from ai_edge_litert.interpreter import Interpreter

    try:
        with store.local_copy(name) as path:
            if name.endswith(".keras"):
                keras.models.load_model(path)
            elif name.endswith(".tflite"):
                Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - reported
        return f"{name}: {type(exc).__name__}: {exc}"
    return None


def test_random_sigkills_with_log_dir_on_s3(s3_server, tmp_path):
    import keras
    from cvml_ckpt import CkptCallback
    from cvml_tflite import TFLiteCallback

    rng = random.Random(SEED)
    bucket = s3_server.bucket("cvml-kills")
    env = dict(os.environ, **s3_server.env(), PYTHONPATH=os.pathsep.join(sys.path))
    counts = dict.fromkeys(("unloadable", "regressions", "mismatch", "scratch"), 0)
    notes: list[str] = []
    options = s3_server.storage_options()
    for trial in range(TRIALS):
        url = f"s3://{bucket}/t{trial}"
        root = open_store(url, options)
        proc = subprocess.Popen([sys.executable, str(CHILD), url], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, text=True)
        before: dict[str, float | None] = {"ckpt": None, "tflite": None}
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "training"
            end = time.monotonic() + rng.uniform(0.3, 4.0)
            while time.monotonic() < end and proc.poll() is None:
                for name in before:
                    value = _best(root.child(name))
                    if value is not None:
                        before[name] = value
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=TRIAL_TIMEOUT)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        for cls, name in ((CkptCallback, "ckpt"), (TFLiteCallback, "tflite")):
            store = root.child(name)
            cb = cls(url, {"val_loss": "min"}, storage_options=options)  # the next start
            cb.set_model(model)
            cb.on_train_begin({})
            if not store.exists(MANIFEST_NAME):
                continue
            now = _best(store)
            if before[name] is not None and (now is None or now > before[name]):
                counts["regressions"] += 1
                notes.append(f"t{trial} {name}: best {before[name]} before the kill, {now} after")
            if problems := store_problems(store):
                counts["mismatch"] += 1
                notes.append(f"t{trial} {name}: {problems}")
            for object_name in sorted(store.names()):
                if (problem := _loads(store, object_name)) is not None:
                    counts["unloadable"] += 1
                    notes.append(f"t{trial} {problem}")
        if left := sorted(Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}{proc.pid}-*")):
            counts["scratch"] += 1
            notes.append(f"t{trial}: the killed process' staging folders are left: {left}")
    summary = (f"S3 kill trials={TRIALS} seed={SEED}: unloadable={counts['unloadable']} "
               f"best_regressions={counts['regressions']} "
               f"manifest_mismatch={counts['mismatch']} staging_left={counts['scratch']}")
    print("\n" + summary)
    assert not any(counts.values()), summary + "\n" + "\n".join(notes[:20])


def test_the_store_killed_mid_upload_then_restarted(tmp_path, drive):
    """The server dies while a checkpoint uploads: the write error names the file and
    the URL; after a restart the next start drops the unfinished publish and the
    manifest names exactly the objects, each of which loads."""
    import keras
    from cvml_ckpt import CkptCallback

    server = SeaweedS3(tmp_path / "weed").start()
    try:
        bucket = server.bucket("cvml-outage")
        url = f"s3://{bucket}/run"
        # one attempt per call: a dead server fails the write at once
        options = dict(server.storage_options(),
                       config_kwargs={"retries": {"max_attempts": 1}})
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(2048),
                                  keras.layers.Dense(2)])
        model.compile("adam", "mse")
        model.fit(np.zeros((4, 512)), np.zeros((4, 2)), verbose=0)  # optimizer state
        cb = CkptCallback(url, {"val_loss": "min"}, storage_options=options)
        drive(cb, [{"val_loss": 2.0}], model=model)  # epoch 1 lands
        store = open_store(url, options).child("ckpt")

        def kill_while_uploading():
            """The manifest names the upload as pending just before it starts."""
            deadline = time.monotonic() + TRIAL_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    if b'"pending"' in store.read_bytes(MANIFEST_NAME):
                        server.kill()
                        return
                except OSError:
                    pass
                time.sleep(0.002)

        killer = threading.Thread(target=kill_while_uploading)
        killer.start()
        with pytest.raises(Exception) as info:  # noqa: B017 - the message is checked
            drive(cb, [{"val_loss": 1.0}], model=model, start_epoch=1)
        killer.join()
        message = str(info.value)
        assert "best_val_loss.keras" in message and f"{url}/ckpt" in message, message
        assert options["secret"] not in message

        server.start()  # same ports, same data
        again = CkptCallback(url, {"val_loss": "min"}, storage_options=options)
        again.set_model(model)
        again.on_train_begin({})
        assert store_problems(store) == []
        best = again.policy.best["val_loss"].epoch
        entry = [a for a in read_manifest(store)["artifacts"]
                 if a["path"].endswith("/best_val_loss.keras")][-1]
        assert best in (1, 2) and entry["epoch"] == best  # 2 only if the upload completed
        assert _loads(store, "best_val_loss.keras") is None
    finally:
        server.stop()
