"""Write a :class:`~cvml_ckpt.snapshot.ModelSnapshot` to disk in Keras' own file formats.

Runs on the background worker and touches no live Keras object: only the numpy arrays
and JSON strings of the snapshot.

* ``.weights.h5``: the HDF5 layout of ``model.save_weights`` (``<path>/vars/<i>``
  datasets, a ``name`` attribute on each ``vars`` group), written straight to the file.
* ``.keras``: the zip of ``model.save`` (``metadata.json``, ``config.json``,
  ``model.weights.h5``, ``assets/...``), uncompressed like Keras'. HDF5 writes the
  weights member in place, inside the zip file, behind a 512-byte HDF5 user block that
  holds the member's zip header, instead of building the HDF5 file in memory and
  copying it into the zip as Keras does: half the memory and half the bytes moved.
  Members are stored (not deflated), with zip64 fields for the weights member so
  files over 4 GiB work.

Both load with the public Keras API (``keras.models.load_model``, ``model.load_weights``).
:func:`check_file` checks a written file against what the installed Keras reads (member
names) and against the snapshot (config, every array's shape and dtype), without loading
a model: the callback checks the first file of a run, so a Keras whose format drifted
from this writer is noticed at once.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np

from cvml_ckpt.snapshot import TAG_KEY, ModelSnapshot, keras_archive_names

WEIGHTS_MEMBER = "model.weights.h5"
_CHUNK = 1 << 24
_U32_MAX = 0xFFFFFFFF
_USERBLOCK = 512  # HDF5's smallest user block: room for the weights member's zip header
_LARGE = 1 << 20  # arrays from this size have their CRC computed from memory, in parallel
_POLY = 0xEDB88320
_PAD_ID = 0xCA5E  # the id of the padding extra field (unassigned by the zip spec)


def _write_h5(
    snapshot: ModelSnapshot,
    target: str | os.PathLike[str],
    userblock_size: int = 0,
    placed: dict[int, int] | None = None,
) -> None:
    """The layout ``keras.src.saving.saving_lib.H5IOStore`` writes, entry by entry.

    ``placed`` receives, for arrays in :func:`_large_arrays`, the file offset HDF5
    stored their bytes at (by ``id`` of the array).
    """
    options = {"userblock_size": userblock_size} if userblock_size else {}
    with h5py.File(target, "w", **options) as h5:
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
                dataset = group.create_dataset(key, data=value)
                if value.dtype.name == "bfloat16":
                    dataset.attrs["dtype"] = "bfloat16"
                elif placed is not None and _is_large(value):
                    offset = dataset.id.get_offset()
                    if offset is not None:
                        placed[id(value)] = offset


def write_weights_h5(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> None:
    """Write ``snapshot`` as a ``.weights.h5`` file at ``path``."""
    _write_h5(snapshot, path)


def _dos_time(when: float) -> tuple[int, int]:
    t = time.localtime(when)
    year = max(t.tm_year, 1980)
    return (
        (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
        ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
    )


def _fsync_into(fd: int, errors: list[BaseException]) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        errors.append(exc)


def _is_large(array: np.ndarray) -> bool:
    return (
        array.nbytes >= _LARGE and array.flags.c_contiguous and array.dtype.name != "bfloat16"
    )


def _large_arrays(snapshot: ModelSnapshot) -> list[np.ndarray]:
    return [v for e in snapshot.entries for v in e.values.values() if _is_large(v)]


def _crcs_of(arrays: list[np.ndarray], out: dict[int, int]) -> None:
    for array in arrays:  # zlib releases the GIL: this overlaps HDF5's writing
        out[id(array)] = zlib.crc32(memoryview(array.data).cast("B"))


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32 polynomial (zlib's ``multmodp``)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's)."""
    p, k = 1 << 31, 3
    while len2:
        if len2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        len2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def _crc_of(raw: BinaryIO, start: int, end: int, known: list[tuple[int, int, int]]) -> int:
    """CRC-32 of the file's bytes ``[start, end)``.

    ``known`` lists (offset, size, crc) of regions whose CRC is already computed (the
    large arrays, from memory); only the bytes between them are read back.
    """
    crc, position = 0, start
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    for offset, size, region_crc in sorted(known) + [(end, 0, 0)]:
        if offset < position or offset + size > end:
            continue  # not a usable region: its bytes are read back instead
        raw.seek(position)
        remaining = offset - position
        while remaining:
            got = raw.readinto(view[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
            if not got:
                raise OSError(f"short read of the weights member ({remaining} bytes missing)")
            crc = zlib.crc32(view[:got], crc)
            remaining -= got
        if size:
            crc = crc32_combine(crc, region_crc, size)
        position = offset + size
    return crc


class _ZipMembers:
    """Local headers and the central directory of stored (uncompressed) zip members.

    Python's ``zipfile`` cannot let HDF5 write a member in place, so the archive is
    laid out here; zip64 fields are used where sizes or offsets need them.
    """

    def __init__(self) -> None:
        self.when = _dos_time(time.time())
        self.central: list[bytes] = []

    def local_header(
        self, name: bytes, crc: int, size: int, zip64: bool, pad_to: int = 0
    ) -> bytes:
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, size, size)
            shown = _U32_MAX
        else:
            extra, shown = b"", size
        if pad_to:  # an extra field of an unassigned id, skipped by readers
            fill = pad_to - (30 + len(name) + len(extra) + 4)
            extra += struct.pack("<HH", _PAD_ID, fill) + bytes(fill)
        version = 45 if zip64 else 20
        return struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", version, 0, 0, 0, *self.when,
            crc, shown, shown, len(name), len(extra),
        ) + name + extra

    def add_central(self, name: bytes, crc: int, size: int, offset: int) -> None:
        zip64 = size >= _U32_MAX or offset >= _U32_MAX
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            shown_size, shown_offset = _U32_MAX, _U32_MAX
        else:
            extra, shown_size, shown_offset = b"", size, offset
        version = 45 if zip64 else 20
        self.central.append(struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", version, 3, version, 0, 0, 0, *self.when,
            crc, shown_size, shown_size, len(name), len(extra), 0, 0, 0,
            0o100644 << 16, shown_offset,
        ) + name + extra)

    def write_member(self, raw: BinaryIO, name: str, data: bytes) -> None:
        encoded = name.encode("ascii")
        offset = raw.tell()
        crc = zlib.crc32(data)
        raw.write(self.local_header(encoded, crc, len(data), zip64=False))
        raw.write(data)
        self.add_central(encoded, crc, len(data), offset)

    def write_end(self, raw: BinaryIO) -> None:
        cd_offset = raw.tell()
        for entry in self.central:
            raw.write(entry)
        cd_size = raw.tell() - cd_offset
        count = len(self.central)
        if cd_offset >= _U32_MAX:
            zip64_offset = raw.tell()
            raw.write(struct.pack(
                "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
            ))
            raw.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_offset, 1))
        raw.write(struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size,
            min(cd_offset, _U32_MAX), 0,
        ))


def write_keras(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> None:
    """Write ``snapshot`` as a ``.keras`` model archive at ``path``.

    Layout: the weights member first, its data written by HDF5 itself (C I/O, no
    copy in memory) after a user block that holds the member's zip header; then
    ``metadata.json``, ``config.json``, assets and the central directory. HDF5 finds
    its superblock at the start of the member when Keras reads it from the zip.
    """
    if snapshot.config_json is None:
        raise ValueError("a .keras file needs the model config; this snapshot has none")
    metadata = json.loads(snapshot.metadata_json or "{}")
    if snapshot.tags:
        metadata[TAG_KEY] = snapshot.tags
    large = _large_arrays(snapshot)
    crcs: dict[int, int] = {}
    placed: dict[int, int] = {}
    hasher = threading.Thread(target=_crcs_of, args=(large, crcs), name="cvml-ckpt-crc")
    hasher.start()
    try:
        _write_h5(snapshot, path, userblock_size=_USERBLOCK, placed=placed)
    finally:
        hasher.join()
    known = [(placed[i], a.nbytes, crcs[i]) for a in large if (i := id(a)) in placed and i in crcs]
    zf = _ZipMembers()
    name = WEIGHTS_MEMBER.encode("ascii")
    with open(path, "r+b") as raw:
        end = raw.seek(0, io.SEEK_END)
        size = end - _USERBLOCK
        # The disk writes the data back while the rest of the CRC is computed.
        flush_error: list[BaseException] = []
        flusher = threading.Thread(target=_fsync_into, args=(raw.fileno(), flush_error))
        flusher.start()
        try:
            crc = _crc_of(raw, _USERBLOCK, end, known)
        finally:
            flusher.join()
        if flush_error:
            raise flush_error[0]
        raw.seek(0)
        raw.write(zf.local_header(name, crc, size, zip64=True, pad_to=_USERBLOCK))
        zf.add_central(name, crc, size, 0)
        raw.seek(end)
        zf.write_member(raw, "metadata.json", json.dumps(metadata).encode("utf-8"))
        zf.write_member(raw, "config.json", snapshot.config_json.encode("utf-8"))
        for member, data in sorted(snapshot.assets.items()):
            zf.write_member(raw, member, data)
        zf.write_end(raw)


def write_snapshot(snapshot: ModelSnapshot, path: str | os.PathLike[str]) -> int:
    """Write ``snapshot`` in the format its name says; return the file size in bytes."""
    if str(path).endswith(".keras"):
        write_keras(snapshot, path)
    else:
        write_weights_h5(snapshot, path)
    return Path(path).stat().st_size


def _check_h5(h5: h5py.File, snapshot: ModelSnapshot) -> str | None:
    """Whether the HDF5 weights hold every array of ``snapshot`` with its shape and dtype."""
    expected = 0
    for entry in snapshot.entries:
        for key, value in entry.values.items():
            expected += 1
            name = f"{entry.path}/vars/{key}" if entry.path else f"vars/{key}"
            dataset = h5.get(name)
            if not isinstance(dataset, h5py.Dataset):
                return f"the weights have no dataset {name!r}"
            dtype = dataset.attrs.get("dtype", dataset.dtype.name)
            if dataset.shape != value.shape or dtype != value.dtype.name:
                return (
                    f"{name!r} reads back as {dtype}{list(dataset.shape)}, "
                    f"written as {value.dtype.name}{list(value.shape)}"
                )
    found: list[str] = []
    h5.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
    if len(found) != expected:
        return f"the weights hold {len(found)} arrays, {expected} were written"
    return None


def check_file(path: str | os.PathLike[str], snapshot: ModelSnapshot) -> str | None:
    """What is wrong with the file :func:`write_snapshot` wrote from ``snapshot``, or None.

    ``.keras``: the members the installed Keras reads are there, ``config.json`` is the
    snapshot's, and the weights member holds every array with its shape and dtype.
    ``.weights.h5``: the arrays. Reads only metadata (no model is built); any error
    reading the file is reported as the problem.
    """
    try:
        if not str(path).endswith(".keras"):
            with h5py.File(path, "r") as h5:
                return _check_h5(h5, snapshot)
        names = keras_archive_names()
        if names is None:
            return "this Keras does not say which members a .keras file has"
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            missing = sorted(set(names.values()) - members)
            if missing:
                return (
                    f"the installed Keras reads the members {missing} that the file lacks "
                    f"(it has {sorted(members)})"
                )
            if archive.read(names["config"]).decode("utf-8") != snapshot.config_json:
                return f"{names['config']} differs from the model config"
            json.loads(archive.read(names["metadata"]))
            with archive.open(names["weights"]) as member, h5py.File(member, "r") as h5:
                return _check_h5(h5, snapshot)
    except Exception as exc:  # a file that cannot be read is the finding itself
        return f"reading it back failed ({type(exc).__name__}: {exc})"


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


__all__ = ["check_file", "read_tags", "write_keras", "write_snapshot", "write_weights_h5"]
