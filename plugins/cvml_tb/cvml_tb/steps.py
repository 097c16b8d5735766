"""The last steps already written in a folder's event files, for a resumed run.

A new callback object (a new process resuming a run) learns from the event files what
an earlier object wrote, so that it never writes a step twice. The event files are the
record of what TensorBoard shows: unlike the manifest, they are complete even when a
process died between writing an epoch's summaries and its next manifest write, and they
need no manifest write per epoch.

Two step axes, as in ``keras.callbacks.TensorBoard``: epoch summaries are at the
0-based epoch; ``batch_*`` and ``evaluation_*_vs_iterations`` scalars at the
optimizer's iteration. The one-off summaries at step 0 (the model graph ``keras`` and
the texts ``run/*``) belong to neither.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EVENT_FILE_MARK = "tfevents"
ITERATION_TAG = re.compile(r"^(batch_.*|evaluation_.*_vs_iterations)$")
ONE_OFF_TAGS = frozenset({"keras", "run/model", "run/arguments"})


def is_iteration_tag(tag: str) -> bool:
    """Whether ``tag`` is on the optimizer-iteration axis (else the epoch axis)."""
    return ITERATION_TAG.match(tag) is not None


@dataclass(frozen=True)
class WrittenSteps:
    """The highest steps found: of epoch summaries (-1: none) and of iteration scalars (0: none)."""

    epoch: int = -1
    iteration: int = 0


def last_written_steps(run_dirs: Iterable[str | os.PathLike[str]]) -> WrittenSteps:
    """The highest epoch and iteration steps in the event files of ``run_dirs``.

    A record cut short by a crash ends the reading of its file, as in TensorBoard.
    Missing folders count as empty.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    epoch, iteration = -1, 0
    for run_dir in run_dirs:
        folder = Path(run_dir)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if EVENT_FILE_MARK not in path.name or not path.is_file():
                continue
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.tag in ONE_OFF_TAGS:
                        continue
                    if is_iteration_tag(value.tag):
                        iteration = max(iteration, int(event.step))
                    else:
                        epoch = max(epoch, int(event.step))
    return WrittenSteps(epoch=epoch, iteration=iteration)
