"""Write a :class:`~cvml_ckpt.snapshot.ModelSnapshot` to disk in Keras' own file formats.

Runs on the background worker and touches no live Keras object: only the numpy arrays
and JSON strings of the snapshot.

* ``.weights.h5``: the HDF5 layout of ``model.save_weights`` (``<path>/vars/<i>``
  datasets, a ``name`` attribute on each ``vars`` group), written straight to the file.
* ``.keras``: the zip of ``model.save`` (``metadata.json``, ``config.json``,
  ``model.weights.h5``, ``assets/...``), uncompressed like Keras'. The HDF5 member is
  written in place inside the zip file (through :class:`_Window`) rather than built in
  memory first and copied, which halves the memory and the bytes moved. Every member
  is stored (not deflated), with zip64 fields for the weights member so files over
  4 GiB work.

Both load with the public Keras API (``keras.models.load_model``, ``model.load_weights``).
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import h5py

from cvml_ckpt.snapshot import TAG_KEY, ModelSnapshot

WEIGHTS_MEMBER = "model.weights.h5"
_CHUNK = 1 << 24
_U32_MAX = 0xFFFFFFFF


def _write_h5(snapshot: ModelSnapshot, target: str | os.PathLike[str] | BinaryIO) -> None:
    """The layout ``keras.src.saving.saving_lib.H5IOStore`` writes, entry by entry."""
    with h5py.File(target, "w") as h5:
        if snapshot.tags:
            h5.attrs[TAG_KEY] = json.dumps(snapshot.tags, sort_keys=True)
        for entry in snapshot.entries:
            if not entry.values and not entry.metadata:
                continue  # Keras creates a group only with metadata or a value
            group = h5.create_group("vars") if not entry.path else (
                h5.create_group(entry.path).create_group("vars")
            )
            for key, value in (entry.metadata or {}).items():
                group.attrs[key] = value
            for key, value in entry.values.items():
                if value.dtype.name == "bfloat16":
                    dataset = group.create_dataset(key, data=value)
                    dataset.attrs["dtype"] = "bfloat16"
                else:
                    group[key] = value


def write_weights_h5(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> None:
    """Write ``snapshot`` as a ``.weights.h5`` file at ``path``."""
    _write_h5(snapshot, path)


class _Window(io.RawIOBase):
    """A file seen from ``base`` on: h5py writes the zip member as if it were a file."""

    def __init__(self, raw: BinaryIO, base: int) -> None:
        super().__init__()
        self._raw = raw
        self._base = base
        self._raw.seek(base)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._raw.readinto(buffer)  # type: ignore[attr-defined,no-any-return]

    def write(self, data: Any) -> int:
        return self._raw.write(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            return self._raw.seek(self._base + offset) - self._base
        return self._raw.seek(offset, whence) - self._base

    def tell(self) -> int:
        return self._raw.tell() - self._base

    def truncate(self, size: int | None = None) -> int:
        end = self._raw.tell() if size is None else self._base + size
        return self._raw.truncate(end) - self._base

    def flush(self) -> None:
        self._raw.flush()


def _dos_time(when: float) -> tuple[int, int]:
    t = time.localtime(when)
    year = max(t.tm_year, 1980)
    return (
        (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
        ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
    )


class _ZipWriter:
    """A minimal writer of stored (uncompressed) zip members, zip64 where needed.

    Python's ``zipfile`` cannot hand a seekable member to h5py, so the weights member
    is written here: a local header with room for the zip64 sizes, the data written
    in place, then the header rewritten with the CRC and sizes.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.when = _dos_time(time.time())
        self.central: list[bytes] = []

    def _local_header(self, name: bytes, crc: int, size: int, zip64: bool) -> bytes:
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, size, size)
            shown = _U32_MAX
        else:
            extra, shown = b"", size
        version = 45 if zip64 else 20
        return struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", version, 0, 0, 0, *self.when,
            crc, shown, shown, len(name), len(extra),
        ) + name + extra

    def _central_entry(self, name: bytes, crc: int, size: int, offset: int) -> bytes:
        zip64 = size >= _U32_MAX or offset >= _U32_MAX
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            shown_size, shown_offset = _U32_MAX, _U32_MAX
        else:
            extra, shown_size, shown_offset = b"", size, offset
        version = 45 if zip64 else 20
        return struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", version, 3, version, 0, 0, 0, *self.when,
            crc, shown_size, shown_size, len(name), len(extra), 0, 0, 0,
            0o100644 << 16, shown_offset,
        ) + name + extra

    def add_bytes(self, name: str, data: bytes) -> None:
        encoded = name.encode("ascii")
        offset = self.raw.tell()
        crc = zlib.crc32(data)
        self.raw.write(self._local_header(encoded, crc, len(data), zip64=False))
        self.raw.write(data)
        self.central.append(self._central_entry(encoded, crc, len(data), offset))

    def add_h5(self, name: str, snapshot: ModelSnapshot) -> int:
        """Write the snapshot's HDF5 image as member ``name``; return its size."""
        encoded = name.encode("ascii")
        offset = self.raw.tell()
        header = self._local_header(encoded, 0, 0, zip64=True)
        self.raw.write(header)
        start = offset + len(header)
        _write_h5(snapshot, _Window(self.raw, start))
        end = self.raw.seek(0, io.SEEK_END)
        size = end - start
        crc = 0
        self.raw.seek(start)
        remaining = size
        buffer = bytearray(min(_CHUNK, max(size, 1)))
        view = memoryview(buffer)
        while remaining:
            got = self.raw.readinto(view[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
            if not got:
                raise OSError(f"short read of the weights member ({remaining} bytes missing)")
            crc = zlib.crc32(view[:got], crc)
            remaining -= got
        self.raw.seek(offset)
        self.raw.write(self._local_header(encoded, crc, size, zip64=True))
        self.raw.seek(end)
        self.central.append(self._central_entry(encoded, crc, size, offset))
        return size

    def finish(self) -> None:
        cd_offset = self.raw.tell()
        for entry in self.central:
            self.raw.write(entry)
        cd_size = self.raw.tell() - cd_offset
        count = len(self.central)
        if cd_offset >= _U32_MAX:
            zip64_offset = self.raw.tell()
            self.raw.write(struct.pack(
                "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
            ))
            self.raw.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_offset, 1))
        self.raw.write(struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size,
            min(cd_offset, _U32_MAX), 0,
        ))


def write_keras(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> None:
    """Write ``snapshot`` as a ``.keras`` model archive at ``path``."""
    if snapshot.config_json is None:
        raise ValueError("a .keras file needs the model config; this snapshot has none")
    with open(path, "w+b") as raw:
        zf = _ZipWriter(raw)
        metadata = json.loads(snapshot.metadata_json or "{}")
        if snapshot.tags:
            metadata[TAG_KEY] = snapshot.tags
        zf.add_bytes("metadata.json", json.dumps(metadata).encode("utf-8"))
        zf.add_bytes("config.json", snapshot.config_json.encode("utf-8"))
        zf.add_h5(WEIGHTS_MEMBER, snapshot)
        for name, data in sorted(snapshot.assets.items()):
            zf.add_bytes(name, data)
        zf.finish()


def write_snapshot(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> int:
    """Write ``snapshot`` in the format its name says; return the file size in bytes."""
    if str(path).endswith(".keras"):
        write_keras(snapshot, path)
    else:
        write_weights_h5(snapshot, path)
    return Path(path).stat().st_size


def read_tags(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tags a checkpoint file carries (``{}`` if none), e.g. ``{"epoch": 7}``."""
    if str(path).endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
        tags = metadata.get(TAG_KEY, {})
    else:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get(TAG_KEY)
        tags = json.loads(raw) if raw is not None else {}
    return dict(tags) if isinstance(tags, dict) else {}


__all__ = ["read_tags", "write_keras", "write_snapshot", "write_weights_h5"]
