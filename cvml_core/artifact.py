"""What a callback wrote: the :class:`Artifact` record and the JSON manifest of a folder."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvml_core.atomic import atomic_write_text

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


class Manifest:
    """The ``manifest.json`` a callback keeps in its folder.

    Layout (stable; tools read it)::

        {"version": 1, "callback": "ckpt",
         "basis": {...BasisPolicy.state_dict()...},
         "artifacts": [{...Artifact.to_dict()...}, ...]}

    Every write goes through an atomic rename, so a reader sees the old or the new
    manifest, never half of one.
    """

    def __init__(self, folder: str | os.PathLike[str], callback: str) -> None:
        self.path = Path(folder) / MANIFEST_NAME
        self.callback = callback
        self.basis_state: dict[str, Any] | None = None
        self.artifacts: list[dict[str, Any]] = []
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

    def add(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "callback": self.callback,
            "basis": self.basis_state,
            "artifacts": self.artifacts,
        }

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2, sort_keys=True))
