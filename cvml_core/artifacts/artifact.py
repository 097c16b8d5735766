"""What a callback wrote: :class:`Artifact`, and :class:`Staged`, a file waiting to be
renamed into place."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def file_stem(key: str) -> str:
    """A basis key as part of a file name: other than letters, digits, ``_ . -`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


@dataclass(frozen=True)
class Artifact:
    """One file a callback has written, as passed to ``cvml_artifact_saved``: ``epoch``
    1-based, ``basis_key`` the key it is the best for or None (a ``last`` checkpoint),
    ``details`` kind-specific figures (size, verification results ...)."""

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
    """A file written under ``temp`` (a ``.tmp-`` name beside ``artifact.path``) that
    ``write`` yields, for the core to rename into place, manifest first."""

    temp: Path
    artifact: Artifact
