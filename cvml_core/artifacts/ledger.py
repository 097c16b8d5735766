"""A callback folder's record of its files and per basis key its *committed* best (whose
file is in place): publishes and deletes files manifest first (docs/manifest.md), under
one lock, :attr:`Ledger.lock`, so every method is safe from any thread."""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cvml_core.artifacts.artifact import Artifact, Staged
from cvml_core.artifacts.atomic import write_error
from cvml_core.artifacts.manifest import Manifest, file_name
from cvml_core.artifacts.storage import Store
from cvml_core.policy.basis import BasisPolicy, KeyBest


@dataclass
class SaveJob:
    """The files of one snapshot that ``write`` writes (fields: docs/plugin-authors.md)."""

    epoch: int
    logs: dict[str, Any]
    snapshot: Any
    keys: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    bests: dict[str, KeyBest] = field(default_factory=dict)
    background: bool = True

    def commits(self, artifact: Artifact) -> bool:
        """Whether ``artifact`` is the best file of one of this job's keys."""
        return artifact.basis_key in self.keys and artifact.epoch == self.epoch


class Ledger:
    """The manifest and committed bests of one callback folder."""

    def __init__(self, store: Store, callback: str, policy: BasisPolicy) -> None:
        self.store = store
        self.folder = store.local  # where files are written: the folder, or a staging one
        self.policy = policy
        self.manifest = Manifest(self.store, callback)
        self.lock = threading.Lock()
        self.committed: dict[str, KeyBest] = {}  # key -> the best whose file is written
        self.unannounced: list[Artifact] = []  # recorded; the training thread announces
        self.state_dirty = False  # bests without a file (e.g. tb's) not in the manifest yet

    def start(self) -> None:
        """Load the saved bests into the policy; from then on they count as committed."""
        if self.manifest.basis_state:
            try:
                self.policy.load_state_dict(self.manifest.basis_state)
            except ValueError as exc:
                raise ValueError(f"{exc} (saved in {self.manifest.path})") from exc
        self.committed = copy.deepcopy(self.policy.best)

    def commit_now(self, keys: Iterable[str]) -> None:
        """Commit the policy's bests of ``keys`` at once (bests without a file)."""
        with self.lock:
            self.committed.update({key: copy.copy(self.policy.best[key]) for key in keys})
            self.state_dirty = True

    def publish(self, item: Any, job: SaveJob) -> set[str]:
        """Put one thing ``write`` yielded in place and record it; return the keys of
        ``job`` it commits. Raises the first error after recording what landed."""
        group = list(item) if isinstance(item, (list, tuple)) else [item]
        staged = [g for g in group if isinstance(g, Staged)]
        artifacts = [g for g in group if isinstance(g, Artifact)]
        for artifact in artifacts:  # written in place already: on a store, upload it now
            local = self.folder / file_name(artifact.path)
            if self.store.is_remote and local.is_file():
                self.store.publish(local, local.name)
        error: OSError | None = None
        leftover: list[Staged] = []
        if staged:
            done, leftover, error = self._rename(staged, job)
            artifacts += [g.artifact for g in done]
            if error is not None and not done and not leftover:
                raise error
        landed: set[str] = set()
        with self.lock:
            for artifact in artifacts:
                key = artifact.basis_key
                if key is not None and job.commits(artifact):
                    landed.add(key)
                    old = self.committed[key].epoch
                    if old is None or (job.bests[key].epoch or 0) >= old:
                        self.committed[key] = copy.copy(job.bests[key])
        try:
            self.record(artifacts)
        except OSError as exc:
            if not artifacts and error is not None:
                raise error from exc  # temps stay: the next start drops them
            names = ", ".join(file_name(a.path) for a in artifacts)
            raise write_error(
                f"{names} (epoch {job.epoch}) is in place, but recording it by "
                "writing", self.manifest.path, exc,
            ) from exc
        _remove_temps(leftover)  # the manifest no longer names them
        if error is not None:
            raise error
        return landed

    def _rename(
        self, staged: list[Staged], job: SaveJob
    ) -> tuple[list[Staged], list[Staged], OSError | None]:
        """Name the renames in ``pending``, then rename (docs/manifest.md): return the
        files renamed, those not, and the error that stopped them."""
        entries = []
        for item in staged:
            entry: dict[str, Any] = {
                "op": "rename", "temp": item.temp.name, "artifact": item.artifact.to_dict(),
            }
            digest = self.store.digest(item.temp)  # a store without rename: the content
            if digest is not None:
                entry["sha256"] = digest
            key = item.artifact.basis_key
            if key is not None and job.commits(item.artifact):
                best = job.bests[key]
                entry["best"] = {"key": key, "value": best.value, "epoch": best.epoch}
            entries.append(entry)
        with self.lock:
            self.manifest.pending = self.manifest.pending + entries
            try:
                self.manifest.write()
            except OSError as exc:
                self.manifest.pending = self.manifest.pending[: -len(entries)]
                _remove_temps(staged)
                names = ", ".join(file_name(i.artifact.path) for i in staged)
                return [], [], write_error(
                    f"recording the coming rename of {names} (left under its old content)"
                    " by writing", self.manifest.path, exc,
                )
        done: list[Staged] = []
        for i, item in enumerate(staged):
            try:
                self.store.publish(item.temp, file_name(item.artifact.path))
            except OSError as exc:
                return done, staged[i:], exc
            done.append(item)
        self.store.sync()
        return done, [], None

    def record(self, artifacts: list[Artifact]) -> None:
        """Add ``artifacts`` to the manifest with the committed basis state; write it."""
        with self.lock:  # one lock: a best committed meanwhile is not written over
            state = self.policy.state_dict(self.committed)
            for artifact in artifacts:
                self.manifest.add(artifact)
            self.manifest.basis_state = state
            self.manifest.pending = [
                e for e in self.manifest.pending if e.get("op") == "delete"
                and self.store.exists(file_name(e.get("path")))
            ]
            self.unannounced.extend(artifacts)
            self.manifest.write()
            self.state_dirty = False

    def forget(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Delete recorded files, manifest first; return the locations deleted."""
        names = {file_name(p) for p in paths}
        if not names:
            return []
        with self.lock:
            kept = [e for e in self.manifest.artifacts
                    if file_name(e.get("path")) not in names]
            old_artifacts, old_pending = self.manifest.artifacts, self.manifest.pending
            self.manifest.artifacts = kept
            self.manifest.pending = old_pending + [
                {"op": "delete", "path": name} for name in sorted(names)
            ]
            try:
                self.manifest.write()
            except OSError as exc:
                self.manifest.artifacts, self.manifest.pending = old_artifacts, old_pending
                raise write_error(
                    f"recording the retention delete of {', '.join(sorted(names))} (kept) "
                    "by writing", self.manifest.path, exc,
                ) from exc
        deleted = []
        for name in sorted(names):
            try:
                if not self.store.delete(name):
                    continue
            except OSError as exc:  # left pending: the next start deletes it
                raise write_error("deleting (retention)", self.store.location(name),
                                  exc) from exc
            deleted.append(self.store.location(name))
        return deleted

    def recover(self) -> tuple[list[str], list[str]]:
        """Finish the publishing a stopped run left pending (see :meth:`Manifest.recover`)."""
        with self.lock:
            return self.manifest.recover()


def _remove_temps(staged: list[Staged]) -> None:
    for item in staged:
        with contextlib.suppress(OSError):
            item.temp.unlink()
