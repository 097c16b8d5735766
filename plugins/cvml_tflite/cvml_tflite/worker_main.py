"""The conversion worker process: ``python -m cvml_tflite.worker_main``.

Protocol: one JSON object per line. The parent writes requests to stdin; the
worker answers each with one line on its original stdout. Anything else written to
stdout (by TensorFlow or the converter) is sent to stderr, so it cannot corrupt
the protocol. The worker exits when stdin closes, or with :data:`IDLE_EXIT_CODE` after
``CVML_TFLITE_WORKER_IDLE`` seconds (default 300) without a request, so that an idle
notebook does not keep a TensorFlow process alive.

It never outlives its parent (the training process, pid in ``CVML_TFLITE_PARENT_PID``):
on Linux the kernel kills it when the parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``;
the parent starts it from a thread that lives as long as the process, since the signal
follows the thread that forked); everywhere a watchdog thread exits with
:data:`PARENT_GONE_EXIT_CODE` once ``os.getppid()`` changes, and stdin EOF ends it. It
writes each output to the temporary name it is given and never renames into
``log_dir``: the parent does, after verification, and records the file at once.

Temporary files: the worker starts with ``TMPDIR`` set to the callback's ``.tmp-``
scratch folder in ``log_dir``, and each request names a ``tmpdir`` (a folder in its
snapshot) that is the temp directory while it runs (``TMPDIR`` and Python's
``tempfile.tempdir``). So what TensorFlow writes on the way (the converter's
``tmpXXXXXXXX`` SavedModels, autograph's ``__autograph_generated_file*.py``) lands in
the scratch folder, which the parent removes, and the next run's start if the parent
was killed; never in the system's temp directory.

Request::

    {"snapshot": folder, "tmpdir": folder or null, "imports": [module, ...],
     "quantization": null|"float16"|...,
     "sample": path of a .npy file or null, "verify_samples": 32,
     "outputs": [temporary path to write, ...],
     "reference": path of a reference.npz (batch and the training process' outputs) or null}

Answer: ``{"ok": true, "started_at", "finished_at", "size", "max_abs_error",
"top1_agreement", "samples", "sample_source", "verify_error", "rss_mb"}`` or
``{"ok": false, "stage", "error_type", "message", "started_at", "finished_at", "rss_mb"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

MESSAGE_LIMIT = 6000
IDLE_ENV = "CVML_TFLITE_WORKER_IDLE"
PARENT_ENV = "CVML_TFLITE_PARENT_PID"
DEFAULT_IDLE_SECONDS = 300.0
IDLE_EXIT_CODE = 75
PARENT_GONE_EXIT_CODE = 76
_PR_SET_PDEATHSIG = 1
_WATCH_SECONDS = 0.5


def _parent_gone(parent: int) -> bool:
    return os.getppid() != parent


def die_with_parent() -> None:
    """Exit when the parent process dies: the kernel's parent-death signal on Linux,
    and a thread watching ``os.getppid()`` everywhere."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still ends it
    if _parent_gone(parent):  # died before the signal was armed
        os._exit(PARENT_GONE_EXIT_CODE)

    def watch() -> None:
        while not _parent_gone(parent):
            time.sleep(_WATCH_SECONDS)
        os._exit(PARENT_GONE_EXIT_CODE)

    threading.Thread(target=watch, name="cvml-parent-watch", daemon=True).start()


def _write_durably(path: str, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _shorten(message: str) -> str:
    """Keep the head of a long message: the converter dumps the whole graph after it."""
    if len(message) <= MESSAGE_LIMIT:
        return message
    return f"{message[:MESSAGE_LIMIT]}\n... ({len(message) - MESSAGE_LIMIT} more characters)"


def rss_mb() -> float | None:
    """This process' resident memory in MiB (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _as_input(model: Any, x: Any) -> Any:
    """``x`` in the dtype of the model's (single) input, e.g. uint8 images as float32:
    the converter's calibration feeds samples to the input as they are."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return x
    dtype = getattr(inputs[0].dtype, "name", inputs[0].dtype)
    return x if x.dtype == dtype else x.astype(dtype)


def _sample_for(model: Any, path: str | None, count: int) -> tuple[Any, str]:
    import numpy as np

    if path:
        return _as_input(model, np.load(path)[:count]), "data"
    shape = tuple(model.inputs[0].shape)[1:]
    if any(dim is None for dim in shape):
        raise ValueError(
            f"no sample data and the model's input shape {shape} is not fully defined; "
            "pass sample_data to verify"
        )
    rng = np.random.default_rng(0)
    return rng.standard_normal((min(count, 8), *shape)).astype("float32"), "random"


@contextlib.contextmanager
def temp_dir(folder: str | None) -> Iterator[None]:
    """``folder`` (created) as this process' temp directory for the ``with`` block:
    ``TMPDIR`` for TensorFlow's C++ code, ``tempfile.tempdir`` for Python's."""
    if not folder:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request, with its ``tmpdir`` as the temp directory."""
    with temp_dir(request.get("tmpdir")):
        return _handle(request)


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    from cvml_tflite import convert, verify

    started = time.time()
    stage = "load"
    answer: dict[str, Any] = {"started_at": started}
    try:
        model = convert.load_snapshot(request["snapshot"], request.get("imports", ()))
        stage = "convert"
        calibration = None
        if request.get("sample"):
            import numpy as np

            calibration = _as_input(model, np.load(request["sample"]))
        data = convert.convert(model, request.get("quantization"), calibration,
                               scratch=request["snapshot"])
        stage = "write"
        for temp in request["outputs"]:  # the parent renames them into place
            _write_durably(temp, data)
        answer.update(ok=True, size=len(data), verify_error=None)
    except Exception as exc:
        answer.update(
            ok=False,
            stage=stage,
            error_type=type(exc).__name__,
            message=_shorten(str(exc)),
            traceback=traceback.format_exc(limit=8),
        )
        answer.update(finished_at=time.time(), rss_mb=rss_mb())
        return answer
    try:
        if request.get("reference"):  # the live model ran on another backend
            import numpy as np

            with np.load(request["reference"]) as ref:
                x, source = ref["x"], f"{ref['source']} (outputs of the training process)"
                expected = [ref[f"y{i}"] for i in range(len(ref.files) - 2)]
        else:
            x, source = _sample_for(
                model, request.get("sample"), request.get("verify_samples", 32)
            )
            expected = verify.keras_outputs(model, x)
        figures = verify.compare(verify.run_tflite(data, x), expected)
        answer.update(figures, sample_source=source)
    except Exception as exc:  # the file is written; report why it is not verified
        answer.update(verify_error=f"{type(exc).__name__}: {exc}")
    answer.update(finished_at=time.time(), rss_mb=rss_mb())
    return answer


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # stray prints of TensorFlow go to stderr, not into the protocol
    sys.stdout = sys.stderr
    die_with_parent()
    idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS))
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], idle)
        if not ready:
            sys.exit(IDLE_EXIT_CODE)  # idle: free the memory; the parent starts a new one
        line = sys.stdin.readline()  # the parent sends one request, then waits: no 2nd line
        if not line:
            return  # the parent closed stdin or died
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line))
        except Exception as exc:  # a malformed request: answer, keep serving
            answer = {"ok": False, "stage": "request", "error_type": type(exc).__name__,
                      "message": str(exc)}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
