"""Checkpoint file names, and which files of a folder are current according to its manifest.

Pure Python (no Keras). Names, in ``log_dir/ckpt/`` (``<ext>`` is ``.keras``, or
``.weights.h5`` for weights only):

* ``best_<key><ext>``: the best epoch so far of basis key ``<key>``;
* ``best_<key>.epoch<NNNN><ext>``: an earlier best, kept when ``keep_top_k > 1``;
* ``last<ext>``: the latest due epoch, with ``save_last=True``.

``<key>`` is the basis key with characters other than letters, digits, ``_``, ``-``
and ``.`` replaced by ``_``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cvml_core.artifacts.artifact import file_stem

KIND = "checkpoint"
ROLE_BEST = "best"
ROLE_PREVIOUS = "previous_best"
ROLE_LAST = "last"
EXT_FULL = ".keras"
EXT_WEIGHTS = ".weights.h5"


def best_name(key: str, ext: str) -> str:
    return f"best_{file_stem(key)}{ext}"


def previous_name(key: str, epoch: int, ext: str) -> str:
    return f"best_{file_stem(key)}.epoch{epoch:04d}{ext}"


def last_name(ext: str) -> str:
    return f"last{ext}"


def current_checkpoints(
    folder: Path,
    artifacts: Iterable[Mapping[str, Any]],
    exists: Callable[[str], bool] | None = None,
) -> list[dict[str, Any]]:
    """The manifest entries whose file still holds what the entry says.

    A path written several times (``best_<key>``, ``last``) is described by its last
    entry; entries whose file is gone (replaced, or deleted by retention) are left
    out. Paths are taken relative to ``folder``, so a moved ``log_dir`` still works.
    The returned dicts carry ``file``, the path in ``folder``. ``exists(name)`` says
    whether the folder holds a file (default: ``folder``'s local files).
    """
    if exists is None:
        exists = lambda name: (folder / name).is_file()  # noqa: E731
    latest: dict[str, dict[str, Any]] = {}
    for entry in artifacts:
        if entry.get("kind") != KIND or not entry.get("path"):
            continue
        name = Path(str(entry["path"])).name
        latest[name] = dict(entry)
    current = []
    for name, entry in latest.items():
        if exists(name):
            entry["file"] = folder / name
            current.append(entry)
    return sorted(current, key=lambda e: (int(e.get("epoch") or 0), str(e["file"])))


def select(
    folder: Path,
    artifacts: Iterable[Mapping[str, Any]],
    which: str = "latest",
    max_epoch: int | None = None,
    exists: Callable[[str], bool] | None = None,
) -> dict[str, Any] | None:
    """The entry to restore: the most recent (``which="latest"``) or a key's best.

    ``max_epoch`` leaves out entries of later epochs. None if there is none.
    """
    candidates = [
        e for e in current_checkpoints(folder, artifacts, exists)
        if max_epoch is None or int(e.get("epoch") or 0) <= max_epoch
    ]
    if which != "latest":
        # a key's bests only get better, so its most recent file is its best
        candidates = [e for e in candidates if e.get("basis_key") == which]
    if not candidates:
        return None
    return max(candidates, key=lambda e: int(e.get("epoch") or 0))
