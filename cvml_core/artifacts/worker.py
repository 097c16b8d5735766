"""The background worker: slow work (writing checkpoints, converting, posting a card)
runs on daemon threads ``cvml-worker-N`` shared by the process. Each owner (a callback, a
notifier) has a lane, a :class:`BackgroundWorker`, running its jobs in order beside the
other lanes; a job's failure is raised on the submitting thread, never swallowed. After
each job the heap memory it freed goes back to the operating system."""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvml_core.policy.checks import check_int

#: The most pool threads at once (None: one per lane with work, so no lane waits on
#: another's slow job), and the seconds a pool thread waits for work before it ends.
POOL_SIZE: int | None = None
IDLE_SECONDS = 5.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_heap() -> None:
    """Return the heap memory freed so far to the operating system (glibc's
    ``malloc_trim``; elsewhere nothing). glibc keeps what a thread frees in that
    thread's arena: a write's buffers (a Keras archive holds the whole model while it
    is written) would otherwise stay in the process after the write."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class BackgroundJobError(RuntimeError):
    """A background job failed; the original exception is the ``__cause__``."""


class _Pool:
    """Daemon threads ``cvml-worker-N`` running lanes' steps in the order queued."""

    def __init__(self, size: int | None = POOL_SIZE, idle_seconds: float = IDLE_SECONDS) -> None:
        self.size = size
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._ready: deque[Callable[[], None]] = deque()
        self._numbers: set[int] = set()  # of the live threads
        self._idle = 0

    @property
    def threads(self) -> int:
        """How many pool threads are alive."""
        with self._cond:
            return len(self._numbers)

    def run(self, step: Callable[[], None]) -> None:
        """Run ``step()`` on a pool thread, after the steps queued before it."""
        with self._cond:
            self._ready.append(step)
            if self._idle < len(self._ready) and (
                self.size is None or len(self._numbers) < self.size
            ):
                number = next(n for n in itertools.count(1) if n not in self._numbers)
                self._numbers.add(number)
                threading.Thread(
                    target=self._loop, args=(number,), name=f"cvml-worker-{number}", daemon=True
                ).start()
            self._cond.notify()

    def _loop(self, number: int) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    self._idle += 1
                    woken = self._cond.wait(self.idle_seconds)
                    self._idle -= 1
                    if not woken and not self._ready:
                        self._numbers.discard(number)  # idle: let the thread end
                        return
                step = self._ready.popleft()
            step()  # a lane's step never raises: it keeps its job's failure

    def _reset(self) -> None:  # in a forked child: the parent's threads do not exist
        self._cond = threading.Condition()
        self._ready.clear()
        self._numbers.clear()
        self._idle = 0


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL._reset)


@dataclass
class _Job:
    name: str
    fn: Callable[[], Any]
    replaceable: bool = False


class BackgroundWorker:
    """One owner's lane on the shared pool: ``backlog`` jobs may wait (1, or None for any
    number, e.g. notifiers); results come from :meth:`drain`. A job must not wait for
    another job; make lanes after a fork."""

    def __init__(self, name: str = "cvml-worker", backlog: int | None = 1) -> None:
        self.name = name
        self.backlog = None if backlog is None else check_int(
            "backlog", backlog, 1, "or None: any number"
        )
        self._cond = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._running: _Job | None = None
        self._queued = False  # a step of this lane is queued on the pool or running
        self._results: list[Any] = []
        self._errors: list[tuple[str, BaseException]] = []
        #: Names of the jobs a newer one replaced, oldest first.
        self.superseded: list[str] = []

    def __repr__(self) -> str:
        return f"BackgroundWorker({self.name!r}, busy={self.busy})"

    @property
    def busy(self) -> bool:
        """Whether a job is running or waiting."""
        with self._cond:
            return self._running is not None or bool(self._waiting)

    def submit(self, name: str, fn: Callable[[], Any], supersede: bool = False) -> None:
        """Queue ``fn`` (a non-None result is kept for :meth:`drain`); with ``supersede``
        replace a waiting job also submitted with it, else wait while ``backlog`` wait."""
        self.raise_if_failed()
        with self._cond:
            while True:
                if supersede and self._waiting and self._waiting[-1].replaceable:
                    self.superseded.append(self._waiting.pop().name)
                if self.backlog is None or len(self._waiting) < self.backlog:
                    break
                self._cond.wait()
            self._waiting.append(_Job(name, fn, supersede))
            start, self._queued = not self._queued, True
        if start:
            _POOL.run(self._step)

    def _step(self) -> None:
        """On a pool thread: run this lane's next job, then queue the lane again."""
        with self._cond:
            job = self._running = self._waiting.popleft()
            self._cond.notify_all()
        try:
            result = job.fn()
        except BaseException as exc:  # kept and re-raised on the submitting thread
            with self._cond:
                self._errors.append((job.name, exc))
        else:
            if result is not None:
                with self._cond:
                    self._results.append(result)
        release_free_heap()  # before the lane reads idle: a job's memory is given back
        with self._cond:
            self._running = None
            more = self._queued = bool(self._waiting)
            self._cond.notify_all()
        if more:
            _POOL.run(self._step)

    def wait_for_room(self) -> None:
        """Block until no job is waiting (one may be running)."""
        with self._cond:
            while self._waiting:
                self._cond.wait()

    def raise_if_failed(self) -> None:
        """Raise :class:`BackgroundJobError` naming every job failed since the last call."""
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

    def wait(self, raise_error: bool = True, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout``) until idle, return whether it is; ``raise_error``:
        then raise a failure."""
        with self._cond:
            idle = self._cond.wait_for(
                lambda: self._running is None and not self._waiting, timeout
            )
        if raise_error:
            self.raise_if_failed()
        return idle
