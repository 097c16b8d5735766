"""A callback folder on an object store (any fsspec filesystem), written without renames:
files staged locally are uploaded, streamed in parts, and appear whole or not at all; the
manifest is the commit point (docs/storage.md)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cvml_core.artifacts.atomic import TEMP_PREFIX, write_error
from cvml_core.artifacts.storage import LogDirError, Store, mask

PART_BYTES = 16 * 2**20  # one part of an upload; an upload holds about two in memory
READ_BYTES = 2**20  # one read of the local file
STAGING_PREFIX = "cvml-staging-"  # local staging folders: cvml-staging-<pid>-<random>
#: The package that gives fsspec each scheme, and cvml-core's extra that installs it.
SCHEME_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                   "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure")}


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` and the path in it; else name what provides it."""
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
        """A local staging folder, made on first use and removed when the store goes."""
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
            raise write_error("writing", self.location(name), exc) from exc

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
        self.upload(temp, name)
        with contextlib.suppress(OSError):
            temp.unlink()

    def upload(self, source: Path, name: str) -> None:
        try:
            self._put(source, name)
        except Exception as exc:
            raise write_error("uploading", self.location(name), exc) from exc

    def digest(self, temp: Path) -> str | None:
        return _sha256(lambda: open(temp, "rb"))

    def landed(self, name: str, temp: str, digest: str | None) -> bool:
        """An object is replaced whole or not at all: it landed iff its bytes hash to
        ``digest`` (read only after a stopped publish)."""
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
            raise write_error("deleting", self.location(name), exc) from exc
        return True

    def fetch(self, name: str, target: Path) -> None:
        try:
            self.fs.get_file(self._path(name), str(target))
        except Exception as exc:
            raise write_error("downloading", self.location(name), exc) from exc

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
    """Delete the staging folders of processes that are gone (a SIGKILL cleans nothing)."""
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
