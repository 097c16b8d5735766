"""Atomic file writes: a temporary name in the same folder, fsync, then rename.

A crash or a kill at any moment leaves either the previous file or the new one under
the final name, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def temp_path_for(final: Path) -> Path:
    """A fresh temporary name beside ``final`` that keeps its full suffix.

    Writers such as ``model.save`` check the suffix (``.keras``, ``.weights.h5``),
    so the random part goes in front: ``.tmp-<hex>-<name>``.
    """
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{final.name}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``final``.

    If the body raises, the temporary file is removed and ``final`` is untouched::

        with atomic_path(log_dir / "best.keras") as tmp:
            model.save(tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer produced no file at {tmp} for {final}")
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files a killed process left in ``folder``; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX) and p.is_file()]
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale
