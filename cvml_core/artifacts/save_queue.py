"""A callback's save queue: snapshot on the training thread, write on the worker (one
running, one waiting), then commit the keys whose files landed, roll back the others."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cvml_core.artifacts.atomic import temp_files_in
from cvml_core.artifacts.ledger import SaveJob
from cvml_core.policy.basis import KeyBest

if TYPE_CHECKING:
    from cvml_core.artifacts.callback import BasisCallback


class SkipSave(Exception):
    """Raised by :meth:`BasisCallback.snapshot` to skip a save on purpose (e.g. no memory
    for it): its keys are rolled back and the epoch added to ``skipped``, silently."""


class SaveQueue:
    """The saves of one callback, under its ledger's lock (which guards the bests too)."""

    def __init__(self, callback: BasisCallback) -> None:
        self.callback = callback
        self.lock = callback.ledger.lock
        self.writing: dict[str, KeyBest] = {}  # key -> best of the newest unwritten save
        self.waiting: dict[tuple[str, str], SaveJob] = {}  # target -> newest job to write
        self.failed: list[tuple[str, KeyBest]] = []  # rolled back on the training thread
        self.messages: list[str] = []  # warnings to give on the training thread

    def save(
        self, epoch: int, logs: Mapping[str, Any], keys: Iterable[str], extras: Iterable[str]
    ) -> None:
        """See :meth:`BasisCallback.save`."""
        cb = self.callback
        keys, extras = list(keys), list(extras)
        if not keys and not extras:
            return
        if not cb.chief:  # the same reads as the chief (collective under a distribution)
            try:
                cb.release(cb.snapshot(epoch, dict(logs)))
            except SkipSave:
                cb.skipped.append(epoch)
            return
        if cb.background and not cb.supersede:
            cb.worker.wait_for_room()
        with self.lock:
            bests = {key: copy.copy(cb.policy.best[key]) for key in keys}
        try:
            with temp_files_in(cb.folder):  # a kill leaves Keras' temp folders here
                snapshot = cb.snapshot(epoch, dict(logs))
        except Exception as exc:
            self.roll_back([(key, bests[key]) for key in keys])
            if isinstance(exc, SkipSave):
                cb.skipped.append(epoch)
                return
            if cb.strict:
                raise
            message = self._failure_message(epoch, keys + extras, exc, "snapshot")
            warnings.warn(message, cb.warning_category, stacklevel=4)
            return
        job = SaveJob(epoch, dict(logs), snapshot, keys, extras, bests, cb.background)
        replaced = []
        with self.lock:
            for target in [("key", k) for k in keys] + [("extra", e) for e in extras]:
                if target in self.waiting:
                    replaced.append(self.waiting[target])
                self.waiting[target] = job
            self.writing.update(bests)
            waiting = {id(j) for j in self.waiting.values()}
        for old in {id(j): j for j in replaced}.values():
            if id(old) not in waiting:
                cb.release(old.snapshot)
        if cb.background:
            name = f"{cb.save_label} of epoch {epoch}"
            cb.worker.submit(name, self._write_waiting, supersede=cb.supersede)
        else:
            cb.worker.wait(raise_error=False)  # one writer of the files at a time
            try:
                self._write_waiting()
            finally:
                cb.announce()

    def _write_waiting(self) -> None:
        """Write every waiting job (worker); raise the first failure if ``strict``."""
        with self.lock:
            waiting, self.waiting = self.waiting, {}
        jobs: dict[int, SaveJob] = {}
        for (kind, target), job in waiting.items():
            narrowed = jobs.setdefault(id(job), replace(job, keys=[], extras=[]))
            (narrowed.keys if kind == "key" else narrowed.extras).append(target)
        error: BaseException | None = None
        for job in sorted(jobs.values(), key=lambda j: j.epoch):
            try:
                self._write_one(job)
            except Exception as exc:
                error = error or exc
            finally:
                self.callback.release(job.snapshot)
        if error is not None:
            raise error

    def _write_one(self, job: SaveJob) -> None:
        cb = self.callback
        landed: set[str] = set()
        error: Exception | None = None
        try:
            with temp_files_in(cb.folder):  # a kill leaves Keras' temp folders here
                for item in cb.write(job):
                    landed |= cb.ledger.publish(item, job)
        except Exception as exc:
            error = exc
        with self.lock:
            for key in job.keys:
                if self.writing.get(key) == job.bests[key]:
                    del self.writing[key]
        failed = [k for k in job.keys if k not in landed]
        self.roll_back([(k, job.bests[k]) for k in failed], deferred=job.background)
        if error is not None:
            if cb.strict:
                raise error
            self.warn_later(
                self._failure_message(job.epoch, failed + job.extras, error, cb.save_label)
            )

    def _failure_message(
        self, epoch: int, targets: list[str], exc: BaseException, what: str
    ) -> str:
        if targets:
            outcome = f"(for {', '.join(targets)}) failed, no file was written for it"
        else:
            outcome = "failed after its files were in place"
        name = self.callback.name
        return f"{name}: {what} of epoch {epoch} {outcome}: {type(exc).__name__}: {exc}"

    def roll_back(self, failed: list[tuple[str, KeyBest]], deferred: bool = False) -> None:
        """Set each failed key's best back to that of a save still being written for it,
        else to its committed best, unless a newer epoch decided since; ``deferred``
        (from the worker): at the next :meth:`settle`, on the training thread."""
        policy = self.callback.policy
        with self.lock:
            if deferred:
                self.failed.extend(failed)
                return
            for key, best in failed:
                if policy.best[key] == best:
                    target = self.writing.get(key, self.callback.committed[key])
                    policy.best[key] = copy.copy(target)

    def warn_later(self, message: str) -> None:
        """Keep ``message`` for :meth:`settle` (safe from the worker)."""
        with self.lock:
            self.messages.append(message)

    def settle(self) -> list[str]:
        """Roll back what failed on the worker; return the warnings kept (training thread)."""
        with self.lock:
            failed, self.failed = self.failed, []
            messages, self.messages = self.messages, []
        self.roll_back(failed)
        return messages
