"""Atomic file writes: a ``.tmp-`` name in the same folder, fsync, then rename, so a kill
leaves the previous file or the new one, never half of one; :func:`remove_stale_temps`
deletes the temporary files a killed process left. An ``OSError`` of a write becomes a
:class:`FileWriteError` naming the step, the file and its folder."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"


class FileWriteError(OSError):
    """A write, rename or delete of a file failed (``errno``: the cause's)."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(action: str, path: str | os.PathLike[str], exc: BaseException) -> OSError:
    """``exc`` as a :class:`FileWriteError` naming ``action``, the file and its folder."""
    while isinstance(exc, FileWriteError) and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__  # the root cause's reason, under the caller's words
    errno = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if not isinstance(exc, OSError):  # e.g. an object store client's error: name it
        reason = f"{type(exc).__name__}: {reason}"
    if "://" in str(path):  # a (masked) URL of an object store
        folder, _, name = str(path).rpartition("/")
    else:
        path = Path(path)
        folder, name = str(path.parent), path.name
    return FileWriteError(errno, f"{action} {name} in {folder} failed: {reason}", str(path))


def temp_path_for(final: Path) -> Path:
    """A fresh ``.tmp-<hex>-<name>`` beside ``final`` (the suffix ``model.save`` checks)."""
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{final.name}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some platforms cannot; the rename still happened
        _fsync(folder)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write, renamed to ``final`` if the body succeeds."""
    final = Path(final)
    with staging(final) as tmp:
        yield tmp
    try:
        rename_into_place(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def rename_into_place(temp: Path, final: Path) -> None:
    """``os.replace(temp, final)``; an ``OSError`` becomes a :class:`FileWriteError`."""
    try:
        os.replace(temp, final)
    except OSError as exc:
        raise write_error("renaming into place", final, exc) from exc


@contextlib.contextmanager
def staging(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` to write: fsynced and left for the caller
    to rename (e.g. as a ``Staged`` file), or removed if the body raises."""
    final = Path(final)
    tmp = temp_path_for(final)
    try:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            written = tmp.exists()
            if written:
                _fsync(tmp)
        except OSError as exc:
            raise write_error("writing", final, exc) from exc
        if not written:
            raise FileNotFoundError(f"the writer produced no file at {tmp} for {final}")
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def scratch_dir(folder: str | os.PathLike[str], label: str) -> Path:
    """A new scratch folder ``folder/.tmp-<label>-<random>`` (its owner removes it)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{label}-", dir=folder))


_temp_lock = threading.Lock()
_temp_users = 0
_temp_folder: Path | None = None
_temp_saved: str | None = None


@contextlib.contextmanager
def temp_files_in(folder: str | os.PathLike[str]) -> Iterator[None]:
    """During the block, Python's temp directory is a scratch folder of a local ``folder``
    (removed at the next start after a kill); overlapping blocks share it."""
    global _temp_users, _temp_folder, _temp_saved
    if "://" in str(folder):  # not a local folder: the temp directory stays as it is
        yield
        return
    with _temp_lock:
        if _temp_users == 0:
            _temp_folder = scratch_dir(folder, "tempdir")
            _temp_saved, tempfile.tempdir = tempfile.tempdir, str(_temp_folder)
        _temp_users += 1
    try:
        yield
    finally:
        with _temp_lock:
            _temp_users -= 1
            if _temp_users == 0:
                tempfile.tempdir = _temp_saved
                assert _temp_folder is not None
                with contextlib.suppress(OSError):
                    _temp_folder.rmdir()
                _temp_folder = None


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete and return the ``.tmp-*`` a killed process left (while no writer works)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return stale
