"""What a callback wrote: the :class:`Artifact` record and the JSON manifest of a folder."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvml_core.atomic import atomic_write_text, write_error

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def file_stem(key: str) -> str:
    """A basis key as part of a file name: other than letters, digits, ``_ . -`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


@dataclass(frozen=True)
class Artifact:
    """One file a callback has written, as passed to ``cvml_artifact_saved``.

    ``epoch`` is 1-based, as Keras prints it. ``basis_key`` is the basis key the file
    is the best for, or None (a ``last`` checkpoint, an end-of-training export).
    ``details`` holds kind-specific figures (size, verification results ...).
    """

    kind: str
    path: str
    epoch: int
    metrics: dict[str, float]
    basis_key: str | None = None
    callback: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Staged:
    """A file written and fsynced under ``temp`` (a ``.tmp-`` name beside
    ``artifact.path``), for the core to rename into place and record.

    :meth:`cvml_core.BasisCallback.write` yields these (or a list of them, published
    together) so the manifest names the rename before it happens; see
    :class:`Manifest` for the order.
    """

    temp: Path
    artifact: Artifact


class Manifest:
    """The ``manifest.json`` a callback keeps in its folder.

    Layout (stable; tools read it)::

        {"version": 1, "callback": "ckpt",
         "basis": {...BasisPolicy.state_dict()...},
         "artifacts": [{...Artifact.to_dict()...}, ...]}

    Every write goes through an atomic rename, so a reader sees the old or the new
    manifest, never half of one.

    The order of a publish (files and manifest agree after any single failure or a
    kill at any point):

    1. each file is written and fsynced under a ``.tmp-`` name beside its final name;
    2. the manifest is written with a ``"pending"`` list naming each rename (temp
       name, final entry, and the best it commits);
    3. each temp file is renamed to its final name;
    4. the manifest is written with the entries recorded and ``"pending"`` empty.

    A retention delete is the mirror: the manifest drops the entries and names the
    file in ``"pending"`` (``op: delete``) first, then the file is deleted.
    :meth:`recover` (run when a callback starts on the folder) finishes what a killed
    or failed run left: a pending rename whose temp file is gone happened, so its
    entry is recorded and its best committed (adopted); one whose temp file is still
    there did not, so it is dropped (the temp file goes with the stale temps); a
    pending delete is done again. So the manifest never names a file that does not
    exist, and no final file exists that the manifest does not name.
    """

    def __init__(self, folder: str | os.PathLike[str], callback: str) -> None:
        self.path = Path(folder) / MANIFEST_NAME
        self.callback = callback
        self.basis_state: dict[str, Any] | None = None
        self.artifacts: list[dict[str, Any]] = []
        #: Renames and deletes announced but not known to be done (see the order above).
        self.pending: list[dict[str, Any]] = []
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read manifest {self.path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError(
                f"manifest {self.path} has an unknown layout; expected "
                f"version {MANIFEST_VERSION}. Received: version={data.get('version')!r}"
                if isinstance(data, dict)
                else f"manifest {self.path} is not a JSON object"
            )
        self.basis_state = data.get("basis")
        self.artifacts = list(data.get("artifacts", []))
        self.pending = list(data.get("pending", []))

    def recover(self) -> tuple[list[str], list[str]]:
        """Finish the pending renames and deletes of a run that stopped between the
        steps of a publish; write the manifest if anything changed.

        Returns ``(adopted, dropped)``: the file names recorded now, and those whose
        rename never happened. Call it only while no writer uses the folder.
        """
        if not self.pending:
            return [], []
        folder = self.path.parent
        adopted: list[str] = []
        dropped: list[str] = []
        still: list[dict[str, Any]] = []
        for entry in self.pending:
            if entry.get("op") == "delete":
                target = folder / Path(str(entry.get("path", ""))).name
                try:
                    if target.name and target.is_file():
                        target.unlink()
                except OSError:  # e.g. an immutable file: stays pending, tried again
                    still.append(entry)
                continue
            artifact = dict(entry.get("artifact") or {})
            final = folder / Path(str(artifact.get("path", ""))).name
            temp = folder / Path(str(entry.get("temp", ""))).name
            if temp.name and not temp.exists() and final.is_file():
                self.artifacts.append(artifact)
                adopted.append(final.name)
                best = entry.get("best")
                if best and self.basis_state is not None:
                    bests = self.basis_state.setdefault("best", {})
                    old = bests.get(best["key"]) or {}
                    if old.get("epoch") is None or int(best["epoch"]) >= int(old["epoch"]):
                        bests[best["key"]] = {"value": best["value"], "epoch": best["epoch"]}
            else:
                dropped.append(final.name)
        self.pending = still
        self.write()
        return adopted, dropped

    def add(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = {
            "version": MANIFEST_VERSION,
            "callback": self.callback,
            "basis": self.basis_state,
            "artifacts": self.artifacts,
        }
        if self.pending:
            data["pending"] = self.pending
        return data

    def write(self) -> None:
        """Write the manifest atomically; a failure is a
        :class:`~cvml_core.atomic.FileWriteError` naming ``manifest.json`` and its folder."""
        try:
            atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2, sort_keys=True))
        except OSError as exc:
            raise write_error("writing", self.path, exc) from exc
