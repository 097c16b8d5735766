"""Where a callback folder's files live: a local folder, or a URL (``s3://``, ``gs://``, any
filesystem fsspec knows). Everything that reads or writes ``log_dir`` goes through a
:class:`Store`; :func:`open_store` picks one.

* :class:`LocalStore`: a folder, as before (temp file beside the final name, fsync,
  ``os.replace``).
* :class:`RemoteStore`: an object store through fsspec. Files are written to a local
  staging folder and published by one upload per object (a single PUT, or a multipart
  upload streamed from the file in parts of ``PART_BYTES``); an object appears whole when
  the upload completes, never in part. There is no rename: the manifest is the commit
  point, and a stopped publish is recognised by its content's SHA-256 (see
  ``docs/storage.md``).

Credentials come the way each filesystem takes them (environment, ``~/.aws``, application
default credentials) or from ``storage_options``; :func:`mask` strips userinfo and query
from every URL a message shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cvml_core.artifacts.atomic import (
    TEMP_PREFIX,
    atomic_write_bytes,
    fsync_dir,
    remove_stale_temps,
    write_error,
)

#: The size of one part of an upload; an upload holds about two parts in memory.
PART_BYTES = 16 * 2**20
#: What one read of the local file takes (the part buffer fills up to exactly a part).
READ_BYTES = 2**20
#: The local staging folders of object-store folders: ``cvml-staging-<pid>-<random>``.
STAGING_PREFIX = "cvml-staging-"
#: The package that gives fsspec each scheme, and the extra that installs it.
SCHEME_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                   "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure")}


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
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def open_store(
    location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> Store:
    """The store of ``location``: a :class:`LocalStore` for a path or ``file://`` URL,
    else a :class:`RemoteStore` through fsspec (``storage_options`` go to its filesystem)."""
    text = str(location)
    if text.startswith("file://"):
        text = urlsplit(text).path
    if not is_url(text):
        return LocalStore(Path(text))
    return RemoteStore(text, dict(storage_options or {}))


class Store:
    """One folder of ``log_dir``. ``local`` is the local folder that holds the files
    being written (the folder itself for a :class:`LocalStore`, a staging folder for a
    :class:`RemoteStore`)."""

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
        """The files directly in this folder."""
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` at once (a reader sees old or new, whole)."""
        raise NotImplementedError

    def publish(self, temp: Path, name: str) -> None:
        """Put the local file ``temp`` (a :func:`~cvml_core.artifacts.atomic.staging` file of
        :attr:`local`) in place as ``name``; ``temp`` is gone afterwards."""
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

    def local_copy(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local file holding ``name`` (the file itself when local; else a download,
        deleted afterwards)."""
        raise NotImplementedError

    def upload(self, source: Path, name: str) -> None:
        """Copy the local file ``source`` to ``name`` (a new object; no manifest)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Make the publishes so far durable (a local folder's fsync; nothing on a store)."""

    def probe(self, what: str) -> None:
        """Create the folder if needed, write and delete one small file; a failure is a
        :class:`LogDirError` naming ``what`` (e.g. ``log_dir='s3://b/run'``)."""
        raise NotImplementedError

    def remove_stale_temps(self) -> None:
        """Delete the ``.tmp-`` files a killed process left (no writer may be at work)."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """Whether the folder holds nothing (at any depth)."""
        raise NotImplementedError

    def remove_all(self) -> None:
        """Delete the folder and everything in it (``cvml demo`` replacing its own run)."""
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
        final = self.local / name
        try:
            os.replace(temp, final)
        except OSError as exc:
            raise write_error("renaming into place", final, exc) from exc

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


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` and the path in it; an unknown scheme names the
    package (and the extra of cvml-core) that provides it."""
    scheme = urlsplit(url).scheme
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        package, extra = SCHEME_PACKAGES.get(scheme, (None, None))
        hint = (f'it needs {package}: pip install "cvml-core[{extra}]"' if package
                else f"fsspec knows no filesystem for {scheme!r} ({_clean(exc)})")
        raise ValueError(
            f"log_dir={mask(url)!r} cannot be opened: {hint}. Received: scheme={scheme!r}"
        ) from None


class RemoteStore(Store):
    """A folder of an object store (any fsspec filesystem), written without renames."""

    is_remote = True

    def __init__(self, url: str, options: dict[str, Any],
                 opened: tuple[Any, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = options
        fs, root = opened if opened is not None else _filesystem(self.url, options)
        self.fs, self.root = fs, str(root).rstrip("/")
        self._local: tempfile.TemporaryDirectory[str] | None = None

    @property
    def local(self) -> Path:  # type: ignore[override]
        """A local staging folder in the system's temp folder, made on first use and
        removed when the store goes; one a killed process left is removed here."""
        if self._local is None:
            _remove_orphaned_staging(Path(tempfile.gettempdir()))
            self._local = tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-")
        return Path(self._local.name)

    def child(self, name: str) -> RemoteStore:
        return RemoteStore(f"{self.url}/{name}", self.options,
                           (self.fs, f"{self.root}/{name}"))

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def location(self, name: str = "") -> str:
        return mask(f"{self.url}/{name}" if name else self.url)

    def _error(self, action: str, name: str, exc: BaseException) -> OSError:
        errno = getattr(exc, "errno", None)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        from cvml_core.artifacts.atomic import FileWriteError

        return FileWriteError(errno, f"{action} {name} in {self.location()} failed: "
                              f"{type(exc).__name__}: {reason}", self.location(name))

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self._path(name))  # another process may have written it
        try:
            return bool(self.fs.isfile(self._path(name)))
        except FileNotFoundError:
            return False

    def names(self) -> set[str]:
        self.fs.invalidate_cache(self.root)
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return set()
        return {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                if e.get("type") == "file"}

    def read_bytes(self, name: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(name)))
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise OSError(f"reading {self.location(name)} failed: {exc}") from exc

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(name), data)
        except Exception as exc:
            raise self._error("writing", name, exc) from exc

    def _put(self, source: Path, name: str) -> None:
        """Stream ``source`` up in parts; on failure nothing appears under ``name``."""
        handle = self.fs.open(self._path(name), "wb", block_size=PART_BYTES)
        try:
            with open(source, "rb") as data:
                while chunk := data.read(READ_BYTES):
                    handle.write(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                handle.discard()
            handle.closed = True  # never finalised: no partial object under the name
            raise
        handle.close()  # completes the upload: the object appears whole

    def publish(self, temp: Path, name: str) -> None:
        try:
            self._put(temp, name)
        except Exception as exc:
            raise self._error("uploading", name, exc) from exc
        with contextlib.suppress(OSError):
            temp.unlink()

    def upload(self, source: Path, name: str) -> None:
        try:
            self._put(source, name)
        except Exception as exc:
            raise self._error("uploading", name, exc) from exc

    def sync(self) -> None:
        pass

    def digest(self, temp: Path) -> str | None:
        return _sha256(lambda: open(temp, "rb"))

    def landed(self, name: str, temp: str, digest: str | None) -> bool:
        """An object is replaced whole or not at all, so the new content is there iff
        the object's bytes hash to ``digest`` (read only after a stopped publish)."""
        if digest is None or not self.exists(name):
            return False
        return _sha256(lambda: self.fs.open(self._path(name), "rb",
                                            block_size=PART_BYTES)) == digest

    def delete(self, name: str) -> bool:
        try:
            self.fs.rm_file(self._path(name))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._error("deleting", name, exc) from exc
        return True

    def fetch(self, name: str, target: Path) -> None:
        try:
            self.fs.get_file(self._path(name), str(target))
        except Exception as exc:
            raise self._error("downloading", name, exc) from exc

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="cvml-fetch-") as scratch:
            target = Path(scratch) / name
            self.fetch(name, target)
            yield target

    def probe(self, what: str) -> None:
        name = f"{TEMP_PREFIX}probe-{secrets.token_hex(4)}"
        bucket = "" if self.root.startswith("/") else self.root.split("/", 1)[0]
        try:
            if bucket:  # some stores create a missing bucket on a write: ask first
                with contextlib.suppress(PermissionError):  # may not list: the write decides
                    self.fs.info(bucket)
            self.fs.pipe_file(self._path(name), b"")
            self.fs.rm_file(self._path(name))
        except Exception as exc:
            if isinstance(exc, FileNotFoundError):
                kind = "the bucket does not exist"
            elif isinstance(exc, PermissionError):
                kind = "access denied (check the credentials)"
            else:
                kind = "the store cannot be reached or written"
            raise LogDirError(
                getattr(exc, "errno", None),
                f"{what} cannot be used: a test write to {self.location()} failed, {kind}: "
                f"{type(exc).__name__}: {_clean(exc)}",
            ) from None

    def is_empty(self) -> bool:
        try:
            return not self.fs.find(self.root, maxdepth=None)
        except FileNotFoundError:
            return True

    def remove_all(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.root, recursive=True)

    def remove_stale_temps(self) -> None:
        for name in self.names():
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(Exception):
                    self.fs.rm_file(self._path(name))


def _remove_orphaned_staging(root: Path) -> None:
    """Delete the staging folders (``cvml-staging-<pid>-*``) of processes that are gone
    (a SIGKILL skips every cleanup)."""
    for path in root.glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(path.name[len(STAGING_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):  # not ours, or alive (PermissionError)
            continue


def _clean(exc: BaseException) -> str:
    """An exception's text with any URL in it masked."""
    words = str(exc).split()
    return " ".join(mask(w) if "://" in w else w for w in words)


def _sha256(opener: Any) -> str:
    digest = hashlib.sha256()
    with opener() as handle:
        while chunk := handle.read(PART_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["PART_BYTES", "LocalStore", "LogDirError", "RemoteStore", "Store", "is_url", "mask",
           "open_store"]
