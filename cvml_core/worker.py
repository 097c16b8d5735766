"""A background worker for slow work that must not hold training.

One job runs at a time. At most one more waits: :meth:`BackgroundWorker.submit`
blocks until there is room, or, with ``supersede=True``, replaces a waiting job that
was itself submitted with ``supersede=True`` (the core's save jobs: a newer one makes
an older, not yet started one pointless); any other waiting job is never dropped.
A job's failure is kept and raised on the training thread by the next
:meth:`raise_if_failed`, :meth:`submit` or :meth:`wait`, never swallowed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BackgroundJobError(RuntimeError):
    """A background job failed; the original exception is the ``__cause__``."""


@dataclass
class _Job:
    name: str
    fn: Callable[[], Any]
    replaceable: bool = False


class BackgroundWorker:
    """Runs jobs on one daemon thread; results are collected with :meth:`drain`."""

    def __init__(self, name: str = "cvml-worker") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._pending: _Job | None = None
        self._running: _Job | None = None
        self._results: list[Any] = []
        self._errors: list[tuple[str, BaseException]] = []
        self._thread: threading.Thread | None = None
        self.superseded: list[str] = []

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None:
                    if not self._cond.wait(timeout=5.0) and self._pending is None:
                        self._thread = None  # idle: let the thread end
                        return
                job, self._pending = self._pending, None
                self._running = job
                self._cond.notify_all()
            try:
                result = job.fn()
            except BaseException as exc:  # kept and re-raised on the training thread
                with self._cond:
                    self._errors.append((job.name, exc))
            else:
                with self._cond:
                    if result is not None:
                        self._results.append(result)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Whether a job is running or waiting."""
        with self._cond:
            return self._running is not None or self._pending is not None

    def submit(self, name: str, fn: Callable[[], Any], supersede: bool = False) -> None:
        """Queue ``fn``; its non-None return value is collected for :meth:`drain`.

        Waits until no other job is waiting, except that with ``supersede`` a waiting
        (not yet started) job also submitted with ``supersede`` is dropped and its
        name kept in :attr:`superseded`.
        """
        self.raise_if_failed()
        with self._cond:
            while self._pending is not None:
                if supersede and self._pending.replaceable:
                    self.superseded.append(self._pending.name)
                    self._pending = None
                    break
                self._cond.wait()
            self._pending = _Job(name, fn, supersede)
            self._ensure_thread()
            self._cond.notify_all()

    def wait_for_room(self) -> None:
        """Block until no job is waiting (one may be running)."""
        with self._cond:
            while self._pending is not None:
                self._cond.wait()

    def raise_if_failed(self) -> None:
        """Raise :class:`BackgroundJobError` if jobs failed since the last call.

        The first failure is the ``__cause__``; the message names every one.
        """
        with self._cond:
            errors, self._errors = self._errors, []
        if errors:
            name, exc = errors[0]
            message = f"background job {name!r} failed: {type(exc).__name__}: {exc}"
            for other_name, other in errors[1:]:
                message += f"; and job {other_name!r}: {type(other).__name__}: {other}"
            raise BackgroundJobError(message) from exc

    def drain(self) -> list[Any]:
        """Return and forget the results of the jobs finished so far."""
        with self._cond:
            results, self._results = self._results, []
        return results

    def wait(self, raise_error: bool = True) -> None:
        """Block until no job runs or waits; then raise a failure if there was one."""
        with self._cond:
            while self._running is not None or self._pending is not None:
                self._cond.wait()
        if raise_error:
            self.raise_if_failed()
