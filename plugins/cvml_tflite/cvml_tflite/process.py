"""The parent side of the conversion worker: one long-lived subprocess, reused.

Converting in the training process would leak memory on every call (TensorFlow
issue 122598) and exporting the live model from a thread breaks ``fit``; so the
callback saves a snapshot and a separate Python process (:mod:`cvml_tflite.worker_main`)
converts it. The process is started on first use and shared by every
``TFLiteCallback`` of this Python process, one conversion at a time. It is replaced
after ``max_conversions`` conversions or when its resident memory exceeds
``max_rss_mb``, after a crash, and it quits by itself after an idle time (see
:mod:`cvml_tflite.worker_main`). It sees no GPU (``CUDA_VISIBLE_DEVICES=-1``) so
it never competes with training for GPU memory. No TensorFlow import here.

The worker dies with this process (see :mod:`cvml_tflite.worker_main`): on Linux
through the kernel's parent-death signal, which fires when the *thread* that started
it ends. So :func:`_start` starts each worker from a thread of its own that waits for
it and ends with it: the conversions themselves run on the shared background worker
(:mod:`cvml_core.artifacts.worker`), whose threads end when idle, which would kill an idle
worker process. Its command line is ``python -m cvml_tflite.worker_main --parent <pid>``.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

from cvml_tflite.worker_main import IDLE_EXIT_CODE, PARENT_ENV


def _start(args: list[str], **popen_kwargs: Any) -> subprocess.Popen[str]:
    """``subprocess.Popen(args, ...)`` from a new thread that then waits for the process
    and ends when it exits (the kernel's parent-death signal follows that thread)."""
    box: queue.Queue[subprocess.Popen[str] | BaseException] = queue.Queue(maxsize=1)

    def parent() -> None:
        try:
            proc: subprocess.Popen[str] = subprocess.Popen(args, **popen_kwargs)
        except BaseException as exc:  # handed to the caller
            box.put(exc)
            return
        box.put(proc)
        proc.wait()  # reaps it; Popen.poll elsewhere reads its return code

    threading.Thread(target=parent, name="cvml-tflite-parent", daemon=True).start()
    started = box.get()
    if isinstance(started, BaseException):
        raise started
    return started


class WorkerCrashedError(RuntimeError):
    """The worker process died while converting."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    env["KERAS_BACKEND"] = "tensorflow"  # the converter needs it, whatever trains
    # The worker must import what this process can (custom layers' modules).
    paths = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


class ConverterProcess:
    """One worker subprocess speaking JSON lines over its stdin and stdout."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="cvml-tflite-worker-")
        child_env = _child_env(env)
        child_env[PARENT_ENV] = str(os.getpid())
        self.proc = _start(
            [sys.executable, "-m", "cvml_tflite.worker_main", "--parent", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env,
            text=True,
            encoding="utf-8",
        )
        self.conversions = 0
        self.last_rss_mb: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; raise if the process dies."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self.proc.wait()
            tail = self.stderr_tail()
            self.close()
            raise WorkerCrashedError(
                f"the tflite conversion worker (pid {self.pid}) died with exit code {code}"
                + (f"; its last output:\n{tail}" if tail else ""),
                exit_code=code,
            )
        answer: dict[str, Any] = json.loads(line)
        self.conversions += 1
        self.last_rss_mb = answer.get("rss_mb")
        return answer

    def close(self) -> None:
        """Let the worker exit (stdin closed); kill it if it does not."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


_lock = threading.Lock()
_shared: ConverterProcess | None = None
#: Worker processes started by this Python process (pids), for tests and benchmarks.
started_pids: list[int] = []


def run_conversion(
    payload: dict[str, Any],
    max_conversions: int,
    max_rss_mb: float | None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one conversion on the shared worker, starting or replacing it as needed."""
    global _shared
    with _lock:
        for attempt in (1, 2):
            if _shared is None or not _shared.alive():
                if _shared is not None:
                    _shared.close()
                _shared = ConverterProcess(env)
                started_pids.append(_shared.pid)
            worker = _shared
            try:
                answer = worker.request(payload)
                break
            except WorkerCrashedError as exc:
                _shared = None
                # It quit for being idle just as the request came: not a crash, retry once.
                if exc.exit_code != IDLE_EXIT_CODE or attempt == 2:
                    raise
        answer["worker_pid"] = worker.pid
        rss = worker.last_rss_mb
        if worker.conversions >= max_conversions or (
            max_rss_mb is not None and rss is not None and rss > max_rss_mb
        ):
            worker.close()
            _shared = None
        return answer


def shutdown_workers() -> None:
    """Stop the shared conversion worker (it is restarted on the next conversion)."""
    global _shared
    with _lock:
        if _shared is not None:
            _shared.close()
            _shared = None


atexit.register(shutdown_workers)
