"""Manifest write cost per record against the number of records already in it.

Run: python benchmarks/bench_manifest.py [--sizes 10 100 1000 5000] [--records 30] [--dir D]

Side by side, on real files in a temporary folder (``--dir``: where it is made):

* old: the single-file manifest of version 1, as the previous release wrote it: the
  whole record (every artifact so far) ``json.dumps(..., indent=2, sort_keys=True)``
  to a temporary file, fsync, rename (``cvml_core.artifacts.atomic.atomic_write_text``);
* new: :class:`cvml_core.artifacts.manifest.Manifest` (``manifest.json`` with what is live,
  replaced atomically, plus the appended, fsynced ``manifest.history.jsonl``).

For each size N each manifest is first filled with N checkpoint-like records (one
write, not timed), then ``--records`` more are recorded one by one the way a callback
publishes a file: the ``pending`` write, then the commit write with the entry and the
basis state (two manifest writes per record), old and new alternating so both meet
the same disk. Printed per N: the median wall time per record (fsyncs included: on a
shared disk they vary from run to run) and the median CPU time of this process (JSON
and copies: steady), old / new, and the files' sizes. Both use the same entries,
the same key (``best_val_loss.keras`` replaced every epoch, plus ``last.keras``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cvml_core.artifacts.artifact import Artifact
from cvml_core.artifacts.atomic import atomic_write_text
from cvml_core.artifacts.manifest import Manifest


class OldManifest:
    """The version 1 write: the whole history rewritten on every write."""

    def __init__(self, folder: Path, callback: str) -> None:
        self.path = folder / "manifest.json"
        self.callback = callback
        self.basis_state: dict[str, Any] | None = None
        self.artifacts: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []

    def add(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact.to_dict())

    def write(self) -> None:
        data: dict[str, Any] = {"version": 1, "callback": self.callback,
                                "basis": self.basis_state, "artifacts": self.artifacts}
        if self.pending:
            data["pending"] = self.pending
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True))


def entry(folder: Path, epoch: int) -> Artifact:
    name = "best_val_loss.keras" if epoch % 2 else "last.keras"
    loss = 1.0 / epoch
    return Artifact(
        "checkpoint", str(folder / name), epoch,
        {"loss": loss * 0.9, "accuracy": 1 - loss, "val_loss": loss, "val_accuracy": 1 - loss},
        "val_loss" if epoch % 2 else None, "ckpt",
        {"role": "best" if epoch % 2 else "last", "format": "keras",
         "includes_optimizer": True, "size_bytes": 27731456, "write_seconds": 0.16,
         "background": True},
    )


def basis(epoch: int) -> dict[str, Any]:
    return {"basis": {"val_loss": "min"}, "skip_from_start": 0, "frequency": 1,
            "min_delta": 0.0, "best": {"val_loss": {"value": 1.0 / epoch, "epoch": epoch}}}


def fill(manifest: Any, folder: Path, size: int) -> None:
    """``size`` records in one write (not timed)."""
    for epoch in range(1, size + 1):
        manifest.add(entry(folder, epoch))
    manifest.basis_state = basis(size)
    manifest.write()


def publish(manifest: Any, folder: Path, epoch: int) -> tuple[float, float]:
    """Record one file as a callback does (pending write, then commit write); return
    its wall and CPU seconds."""
    artifact = entry(folder, epoch)
    wall, cpu = time.perf_counter(), time.process_time()
    manifest.pending = [{"op": "rename", "temp": ".tmp-0000-x", "artifact": artifact.to_dict()}]
    manifest.write()
    manifest.add(artifact)
    manifest.basis_state = basis(epoch)
    manifest.pending = []
    manifest.write()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 5000])
    parser.add_argument("--records", type=int, default=30)
    parser.add_argument("--dir", default=None, help="where the temporary folder is made")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-manifest-", dir=args.dir))
    print(f"folder: {root}; {args.records} records timed per size, old and new alternating; "
          "a record = the pending write + the commit write of one file (median ms)")
    print(f"{'N':>6} {'old wall':>9} {'new wall':>9} {'old/new':>8} {'old CPU':>9} "
          f"{'new CPU':>9} {'old/new':>8} {'old manifest.json':>18} {'new manifest.json':>18} "
          f"{'new history':>12}")
    try:
        for i, size in enumerate(args.sizes):
            folders = root / f"old-{i}", root / f"new-{i}"
            manifests = OldManifest(folders[0], "ckpt"), Manifest(folders[1], "ckpt")
            times: tuple[list[tuple[float, float]], ...] = ([], [])
            for folder, manifest in zip(folders, manifests, strict=True):
                folder.mkdir()
                fill(manifest, folder, size)
            for epoch in range(size + 1, size + args.records + 1):
                for j in (0, 1):
                    times[j].append(publish(manifests[j], folders[j], epoch))
            again = Manifest(folders[1])  # the history reads back whole
            assert len(again.artifacts) == size + args.records
            wall = [statistics.median(t[0] for t in times[j]) * 1e3 for j in (0, 1)]
            cpu = [statistics.median(t[1] for t in times[j]) * 1e3 for j in (0, 1)]
            print(f"{size:>6} {wall[0]:>9.3f} {wall[1]:>9.3f} {wall[0] / wall[1]:>8.1f} "
                  f"{cpu[0]:>9.3f} {cpu[1]:>9.3f} {cpu[0] / cpu[1]:>8.1f} "
                  f"{(folders[0] / 'manifest.json').stat().st_size:>16} B "
                  f"{(folders[1] / 'manifest.json').stat().st_size:>16} B "
                  f"{(folders[1] / 'manifest.history.jsonl').stat().st_size:>10} B")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
