"""Checks of the fault suite: worker lookup, folder snapshots, manifest vs files, a full disk."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cvml_core.artifacts.manifest import HISTORY_NAME, MANIFEST_NAME, read_manifest

TEMP = ".tmp-"


def worker_pids(marker: str) -> list[int]:
    """Live (not zombie) conversion workers whose command line names ``marker``
    (``--parent <pid>`` of the killed training process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "cvml_tflite.worker_main" in cmd and marker in cmd and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def folder_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: (mtime_ns, size)."""
    state = {}
    for path in root.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            state[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return state


def manifest_problems(folder: Path, settled: bool = True) -> list[str]:
    """How ``folder``'s manifest and files disagree (empty: they agree).

    Every file under a final name is named by the manifest (or, unless ``settled``, by
    a pending rename that happened or a pending delete); every file the manifest
    names exists; each key's best file is the manifest's best epoch; ``manifest.json``'s
    ``current`` is the last entry per file of its history. ``settled``:
    after the next start (no pending entries, no temps)."""
    state = json.loads((folder / MANIFEST_NAME).read_text())  # what is live
    data = read_manifest(folder)  # the whole record: the history replayed
    files = {p.name for p in folder.iterdir() if p.name not in (MANIFEST_NAME, HISTORY_NAME)}
    temps = {n for n in files if n.startswith(TEMP)}
    finals = files - temps
    named = {Path(a["path"]).name for a in data["artifacts"]}
    pending = data.get("pending", [])
    problems = []
    latest = {Path(a["path"]).name: a for a in data["artifacts"]}
    current = {Path(a["path"]).name: a for a in state["current"]}
    if current != latest:
        problems.append(f"current {sorted(current)} vs the history's {sorted(latest)}")
    if settled:
        if pending:
            problems.append(f"pending entries left: {pending}")
        if temps:
            problems.append(f"temporary files left: {sorted(temps)}")
    adoptable = {
        Path(e["artifact"]["path"]).name for e in pending
        if e.get("op") == "rename" and e["temp"] not in files
    }
    deleting = {e["path"] for e in pending if e.get("op") == "delete"}
    if named - finals:
        problems.append(f"named but missing: {sorted(named - finals)}")
    if finals - named - adoptable - deleting:
        problems.append(f"on disk but not named: {sorted(finals - named - adoptable - deleting)}")
    if settled:
        for key, best in (data["basis"] or {}).get("best", {}).items():
            if best.get("epoch") is None:
                continue
            entries = [a for a in data["artifacts"] if a.get("basis_key") == key
                       and ".epoch" not in Path(a["path"]).name]
            if not entries or entries[-1]["epoch"] != best["epoch"]:
                problems.append(f"best {key} epoch {best['epoch']} vs files {entries[-1:]}")
    return problems


def fill(mount: Path) -> None:
    """Fill the file system of ``mount`` to the last byte (a real ENOSPC follows)."""
    path = mount / f"filler-{uuid.uuid4().hex}"
    with open(path, "wb") as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    small = b"\0" * 512
    for i in range(100000):
        try:
            with open(mount / f"filler-small-{uuid.uuid4().hex}-{i}", "wb") as out:
                out.write(small)
        except OSError:
            break


def free(mount: Path) -> None:
    for path in mount.glob("filler-*"):
        path.unlink()


def chattr_immutable(path: Path) -> None:
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"chattr +i is not possible here: {result.stderr.strip()}")
    os.sync()
