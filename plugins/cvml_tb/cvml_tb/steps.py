"""The last steps already written in a folder's event files, for a resumed run.

A new callback object (a new process resuming a run) learns from the event files what
an earlier object wrote, so that it never writes a step twice. The event files are the
record of what TensorBoard shows: unlike the manifest, they are complete even when a
process died between writing an epoch's summaries and its next manifest write, and they
need no manifest write per epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BATCH_PREFIX = "batch_"
EVENT_FILE_MARK = "tfevents"


@dataclass(frozen=True)
class WrittenSteps:
    """The highest steps found: of epoch summaries (0: none) and of ``batch_*`` scalars."""

    epoch: int = 0
    batch: int = 0


def last_written_steps(run_dirs: Iterable[str | os.PathLike[str]]) -> WrittenSteps:
    """The highest epoch and batch steps in the event files of ``run_dirs``.

    Batch scalars (tags ``batch_*``) have their own axis, the optimizer's iteration;
    every other summary counts as an epoch summary (the texts at step 0 count for
    nothing). A record cut short by a crash ends the reading of its file, as in
    TensorBoard. Missing folders count as empty.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    epoch = batch = 0
    for run_dir in run_dirs:
        folder = Path(run_dir)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if EVENT_FILE_MARK not in path.name or not path.is_file():
                continue
            for event in EventFileLoader(str(path)).Load():
                tags = [value.tag for value in event.summary.value]
                if not tags:
                    continue
                if all(tag.startswith(BATCH_PREFIX) for tag in tags):
                    batch = max(batch, int(event.step))
                else:
                    epoch = max(epoch, int(event.step))
    return WrittenSteps(epoch=epoch, batch=batch)
