"""Where a callback folder's files live: every read and write of ``log_dir`` goes
through a :class:`Store` that :func:`open_store` picks, a :class:`LocalStore` or for a
URL (``s3://``, ``gs://``, any fsspec filesystem) a
:class:`~cvml_core.artifacts.remote_store.RemoteStore` (docs/storage.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from cvml_core.artifacts.atomic import (
    TEMP_PREFIX,
    atomic_write_bytes,
    fsync_dir,
    remove_stale_temps,
    rename_into_place,
)


class LogDirError(OSError):
    """``log_dir`` cannot be created or written."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL other than ``file://`` (a local path otherwise)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def mask(location: str | os.PathLike[str]) -> str:
    """``location`` without userinfo, query or fragment: safe to print."""
    text = str(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    return urlunsplit((parts.scheme, netloc(parts), parts.path, "", ""))


def netloc(parts: SplitResult) -> str:
    """A URL's host and port without userinfo (an IPv6 host in brackets)."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is not a number
        return host


def open_store(
    location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> Store:
    """The store of ``location`` (``storage_options``: its fsspec filesystem's)."""
    text = str(location)
    if text.startswith("file://"):
        text = urlsplit(text).path
    if not is_url(text):
        return LocalStore(Path(text))
    from cvml_core.artifacts.remote_store import RemoteStore

    return RemoteStore(text, dict(storage_options or {}))


class Store:
    """One folder of ``log_dir``; ``local`` holds the files being written (the folder
    itself, or a remote store's staging folder). Names are files directly in it."""

    local: Path
    is_remote = False

    def child(self, name: str) -> Store:
        raise NotImplementedError

    def location(self, name: str = "") -> str:
        """The printable (masked) location of ``name`` in this folder (of the folder)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.location()

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def names(self) -> set[str]:
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` at once (a reader sees old or new, whole)."""
        raise NotImplementedError

    def publish(self, temp: Path, name: str) -> None:
        """Put the local file ``temp`` (staged in :attr:`local`) in place as ``name``."""
        raise NotImplementedError

    def landed(self, name: str, temp: str, digest: str | None) -> bool:
        """Whether a publish of ``temp`` as ``name`` (content ``digest``) happened."""
        raise NotImplementedError

    def digest(self, temp: Path) -> str | None:
        """What :meth:`landed` needs to recognise ``temp``'s content (None: nothing)."""
        return None

    def delete(self, name: str) -> bool:
        """Delete ``name``; False if it was not there."""
        raise NotImplementedError

    def fetch(self, name: str, target: Path) -> None:
        """Make the local file ``target`` hold ``name``'s bytes."""
        raise NotImplementedError

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        """A local file holding ``name`` (a download, deleted afterwards)."""
        with tempfile.TemporaryDirectory(prefix="cvml-fetch-") as scratch:
            target = Path(scratch) / name
            self.fetch(name, target)
            yield target

    def upload(self, source: Path, name: str) -> None:
        """Copy the local file ``source`` to ``name`` (not recorded in a manifest)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Make the publishes so far durable (a local folder's fsync)."""

    def probe(self, what: str) -> None:
        """Create the folder, write and delete a file; else :class:`LogDirError`."""
        raise NotImplementedError

    def remove_stale_temps(self) -> None:
        """Delete the ``.tmp-`` files a killed process left (while no writer works)."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """Whether the folder holds nothing (at any depth)."""
        raise NotImplementedError

    def remove_all(self) -> None:
        """Delete the folder and everything in it."""
        raise NotImplementedError


class LocalStore(Store):
    """A local folder: files are renamed into place (``os.replace``) and fsynced."""

    def __init__(self, folder: Path) -> None:
        self.local = Path(folder)

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.local / name)

    def location(self, name: str = "") -> str:
        return str(self.local / name) if name else str(self.local)

    def exists(self, name: str) -> bool:
        return (self.local / name).is_file()

    def names(self) -> set[str]:
        if not self.local.is_dir():
            return set()
        return {p.name for p in self.local.iterdir() if p.is_file()}

    def read_bytes(self, name: str) -> bytes:
        return (self.local / name).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.local / name, data)

    def publish(self, temp: Path, name: str) -> None:
        rename_into_place(temp, self.local / name)

    def sync(self) -> None:
        fsync_dir(self.local)

    def landed(self, name: str, temp: str, digest: str | None) -> bool:
        return bool(temp) and not (self.local / temp).exists() and self.exists(name)

    def delete(self, name: str) -> bool:
        try:
            (self.local / name).unlink()
        except FileNotFoundError:
            return False
        return True

    def fetch(self, name: str, target: Path) -> None:
        try:
            os.link(self.local / name, target)
        except OSError:
            shutil.copyfile(self.local / name, target)

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        yield self.local / name

    def upload(self, source: Path, name: str) -> None:
        shutil.copyfile(source, self.local / name)

    def probe(self, what: str) -> None:
        try:
            self.local.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.local, prefix=f"{TEMP_PREFIX}probe-"):
                pass
        except OSError as exc:
            raise LogDirError(
                exc.errno, f"{what} cannot be used: {self.local} cannot be created or "
                f"written ({exc.strerror or exc})",
            ) from exc

    def remove_stale_temps(self) -> None:
        remove_stale_temps(self.local)

    def is_empty(self) -> bool:
        return not self.local.is_dir() or not any(self.local.iterdir())

    def remove_all(self) -> None:
        shutil.rmtree(self.local)
