"""The manifest of a callback folder: ``manifest.json`` (what is live) and its
append-only history ``manifest.history.jsonl`` (the format: docs/manifest.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.atomic import atomic_write_text, fsync_dir, write_error
from cvml_core.artifacts.storage import LocalStore, Store

MANIFEST_NAME = "manifest.json"
HISTORY_NAME = "manifest.history.jsonl"
MANIFEST_VERSION = 2
#: Version 1 (the whole history inline) is still read, and written as 2 at the next write.
READABLE_VERSIONS = (1, 2)


class Manifest:
    """The manifest of one folder (a path or a :class:`Store`; ``callback`` None: the one
    it holds). A writer appends to :attr:`artifacts` or assigns it a shorter list, then writes."""

    def __init__(
        self, folder: str | os.PathLike[str] | Store, callback: str | None = None
    ) -> None:
        self.store = folder if isinstance(folder, Store) else LocalStore(Path(folder))
        self.path = self.store.location(MANIFEST_NAME)
        self.history_path = self.store.location(HISTORY_NAME)
        self._history_data = b""  # on a store without appends: the history's committed bytes
        self.callback = callback or ""
        self.basis_state: dict[str, Any] | None = None
        #: Every entry recorded and not forgotten, in the order recorded.
        self.artifacts: list[dict[str, Any]] = []
        #: Renames and deletes announced but not known to be done (docs/manifest.md).
        self.pending: list[dict[str, Any]] = []
        # What the files hold (as of the last read or write):
        self._seqs: dict[int, tuple[int, dict[str, Any]]] = {}  # id(entry) -> (seq, entry)
        self._synced: list[dict[str, Any]] | None = None  # self.artifacts as written
        self._synced_len = 0
        self._synced_tail: dict[str, Any] | None = None
        self._current: dict[str, dict[str, Any]] = {}  # file name -> its last entry
        self._count: dict[str, int] = {}  # file name -> entries of it in self.artifacts
        self._next_seq = 0
        self._history_bytes = 0  # the committed length of the history
        self._history_lines = 0
        self._stored_callback = ""
        if self.store.exists(MANIFEST_NAME):
            self._read()
            if callback is None:
                self.callback = self._stored_callback

    def _read(self) -> None:
        try:
            data = json.loads(self.store.read_bytes(MANIFEST_NAME).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read manifest {self.path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") not in READABLE_VERSIONS:
            raise ValueError(
                f"manifest {self.path} has an unknown layout; expected version "
                f"{' or '.join(map(str, READABLE_VERSIONS))}. "
                f"Received: version={data.get('version')!r}"
                if isinstance(data, dict)
                else f"manifest {self.path} is not a JSON object"
            )
        self._stored_callback = str(data.get("callback") or "")
        self.basis_state = data.get("basis")
        self.pending = list(data.get("pending", []))
        if data["version"] == 1:  # the whole history inline: all of it is new to the log
            self.artifacts = list(data.get("artifacts", []))
            return
        history = data.get("history") or {}
        try:
            size = int(history.get("bytes", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest {self.path}: bad history.bytes: {exc}") from exc
        live: dict[int, dict[str, Any]] = {}
        lines = self._read_history(size).split(b"\n")[:-1] if size else []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                if record["op"] == "add":
                    seq = int(record["seq"])
                    live[seq] = dict(record["artifact"])
                    self._next_seq = max(self._next_seq, seq + 1)
                elif record["op"] == "forget":
                    for seq in record["seqs"]:
                        live.pop(int(seq), None)
                else:
                    raise ValueError(f"unknown op {record['op']!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"cannot read manifest history {self.history_path} (line {number}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self.artifacts = list(live.values())
        self._seqs = {id(entry): (seq, entry) for seq, entry in live.items()}
        _apply(self._current, self._count, self.artifacts, [], self.artifacts)
        self._history_bytes, self._history_lines = size, len(lines)
        self._mark_synced()

    def _read_history(self, size: int) -> bytes:
        """The first ``size`` bytes of the history: what ``manifest.json`` covers."""
        try:
            data = self.store.read_bytes(HISTORY_NAME)[:size]
        except OSError as exc:
            raise ValueError(f"cannot read manifest history {self.history_path}: {exc}") from exc
        if len(data) < size or not data.endswith(b"\n"):
            raise ValueError(
                f"manifest history {self.history_path} holds {len(data)} bytes, "
                f"{MANIFEST_NAME} records {size} (ending a line)"
            )
        self._history_data = data if self.store.is_remote else b""
        return data

    @property
    def current(self) -> list[dict[str, Any]]:
        """Per file name, its last entry written, oldest first (``"current"``)."""
        if self._synced is None:  # a version 1 manifest, not written since it was read
            current: dict[str, dict[str, Any]] = {}
            _apply(current, {}, self.artifacts, [], self.artifacts)
            return list(current.values())
        return list(self._current.values())

    def recover(self) -> tuple[list[str], list[str]]:
        """Finish a stopped run's pending renames and deletes (while no writer works);
        return the file names recorded now and those whose rename never happened."""
        if not self.pending:
            return [], []
        adopted: list[str] = []
        dropped: list[str] = []
        still: list[dict[str, Any]] = []
        for entry in self.pending:
            if entry.get("op") == "delete":
                target = file_name(entry.get("path"))
                try:
                    if target:
                        self.store.delete(target)
                except OSError:  # e.g. an immutable file: stays pending, tried again
                    still.append(entry)
                continue
            artifact = dict(entry.get("artifact") or {})
            final = file_name(artifact.get("path"))
            temp = file_name(entry.get("temp"))
            if final and self.store.landed(final, temp, entry.get("sha256")):
                self.artifacts.append(artifact)
                adopted.append(final)
                best = entry.get("best")
                if best and self.basis_state is not None:
                    bests = self.basis_state.setdefault("best", {})
                    old = bests.get(best["key"]) or {}
                    if old.get("epoch") is None or int(best["epoch"]) >= int(old["epoch"]):
                        bests[best["key"]] = {"value": best["value"], "epoch": best["epoch"]}
            else:
                dropped.append(final)
        self.pending = still
        self.write()
        return adopted, dropped

    def add(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The whole record as one dict, in the single-file layout of version 1."""
        return self._record(artifacts=self.artifacts)

    def _record(self, **body: Any) -> dict[str, Any]:
        data = {"version": MANIFEST_VERSION, "callback": self.callback,
                "basis": self.basis_state, **body}
        if self.pending:
            data["pending"] = self.pending
        return data

    def write(self) -> None:
        """Append the new history lines, then replace ``manifest.json``; after a failure
        the previous manifest stands and the next write carries the change."""
        added, forgotten = self._changes()
        current, count = dict(self._current), dict(self._count)
        _apply(current, count, added, [entry for _, entry in forgotten], self.artifacts)
        lines = []
        if forgotten:
            lines.append(_line({
                "op": "forget", "seqs": [seq for seq, _ in forgotten],
                "paths": sorted({file_name(entry.get("path")) for _, entry in forgotten}),
            }))
        lines += [
            _line({"op": "add", "seq": self._next_seq + i, "artifact": entry})
            for i, entry in enumerate(added)
        ]
        size = self._history_bytes
        if lines:
            data = b"".join(lines)
            try:
                self._append(data)
            except OSError as exc:
                raise write_error("writing", self.history_path, exc) from exc
            size += len(data)
        state = self._record(current=list(current.values()), history={
            "file": HISTORY_NAME, "bytes": size, "lines": self._history_lines + len(lines),
        })
        text = json.dumps(state, indent=2, sort_keys=True)
        try:
            if self.store.is_remote:  # one PUT: the object is replaced whole
                self.store.write_bytes(MANIFEST_NAME, text.encode("utf-8"))
            else:
                atomic_write_text(self.store.local / MANIFEST_NAME, text)
        except OSError as exc:
            raise write_error("writing", self.path, exc) from exc
        # committed: the files now hold all of self.artifacts
        for _, entry in forgotten:
            del self._seqs[id(entry)]
        for entry in added:
            self._seqs[id(entry)] = (self._next_seq, entry)
            self._next_seq += 1
        self._current, self._count = current, count
        self._history_bytes, self._history_lines = size, self._history_lines + len(lines)
        self._mark_synced()

    def _mark_synced(self) -> None:
        self._synced = self.artifacts
        self._synced_len = len(self.artifacts)
        self._synced_tail = self.artifacts[-1] if self.artifacts else None

    def _changes(self) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
        """The entries of :attr:`artifacts` not in the history yet, and the ``(seq,
        entry)`` of those in it that :attr:`artifacts` no longer holds (an append costs
        what was appended; a list assigned by retention is compared by identity)."""
        entries, n = self.artifacts, self._synced_len
        if entries is self._synced and len(entries) >= n and (
            n == 0 or entries[n - 1] is self._synced_tail
        ):
            return entries[n:], []
        present = {id(entry) for entry in entries}
        forgotten = [(seq, entry) for key, (seq, entry) in self._seqs.items()
                     if key not in present]
        return [entry for entry in entries if id(entry) not in self._seqs], forgotten

    def _append(self, data: bytes) -> None:
        """Append ``data`` to the history at its committed length (dropping any tail
        no ``manifest.json`` covers) and fsync it; on a store without appends, write
        the committed bytes and ``data`` as one new object."""
        if self.store.is_remote:
            whole = self._history_data[: self._history_bytes] + data
            self.store.write_bytes(HISTORY_NAME, whole)
            self._history_data = whole
            return
        path = self.store.local / HISTORY_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            length = os.fstat(fd).st_size
            if length < self._history_bytes:
                raise OSError(
                    f"it holds {length} bytes, {MANIFEST_NAME} records {self._history_bytes}"
                )
            if length > self._history_bytes:  # lines of a write that never committed
                os.ftruncate(fd, self._history_bytes)
            os.lseek(fd, self._history_bytes, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)


def file_name(path: Any) -> str:
    """The file name of a path or URL ("" for None)."""
    return Path(str(path or "")).name


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def _apply(
    current: dict[str, dict[str, Any]],
    count: dict[str, int],
    added: list[dict[str, Any]],
    forgotten: list[dict[str, Any]],
    entries: list[dict[str, Any]],
) -> None:
    """Update ``current`` (file name -> last entry) and ``count`` (file name ->
    entries) for ``added`` and ``forgotten`` entries; ``entries`` is the list after
    the change, searched only when a name's last entry goes and older ones stay."""
    lost = set()
    for entry in forgotten:
        name = file_name(entry.get("path"))
        count[name] = count.get(name, 0) - 1
        if count[name] <= 0:
            count.pop(name, None)
            current.pop(name, None)
            lost.discard(name)
        elif current.get(name) is entry:
            lost.add(name)
    for entry in reversed(entries if lost else []):
        name = file_name(entry.get("path"))
        if name in lost:
            current.pop(name, None)
            current[name] = entry
            lost.discard(name)
            if not lost:
                break
    for entry in added:
        name = file_name(entry.get("path"))
        current.pop(name, None)
        current[name] = entry
        count[name] = count.get(name, 0) + 1


def read_manifest(
    folder: str | os.PathLike[str] | Store, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The whole manifest of ``folder`` (a path, a URL or a store) as one dict."""
    from cvml_core.artifacts.storage import open_store

    store = folder if isinstance(folder, Store) else open_store(folder, storage_options)
    if not store.exists(MANIFEST_NAME):
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {store.location()}")
    return Manifest(store).to_dict()
