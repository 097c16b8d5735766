"""Event files written with TensorBoard's own writer: no TensorFlow needed.

``EventWriter`` appends ``Event`` records holding one ``Summary`` each to one event file
of a run folder, through ``tensorboard.summary.writer.event_file_writer.EventFileWriter``
(the file is named ``events.out.tfevents.<time>.<host>.<pid>.<n>`` and starts with the
``brain.Event:2`` version record, as ``tf.summary`` files do). Records are queued and
written by the writer's thread; ``flush`` makes them durable and ``close`` ends the file.
TensorBoard's reader stops at a record cut short by a crash, so earlier records survive.
"""

from __future__ import annotations

import os
import threading
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class EventWriter:
    """One run folder's event file, opened on the first write; thread-safe."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = os.fspath(logdir)
        self._file: EventFileWriter | None = None
        self._closed = False
        self._lock = threading.Lock()

    def write(self, step: int, summary: summary_pb2.Summary) -> None:
        """Append ``summary`` at ``step`` (nothing when it holds no value)."""
        if not summary.value:
            return
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        with self._lock:
            if self._closed:
                raise ValueError(
                    f"EventWriter for {self.logdir!r} is closed; cannot write step {step}"
                )
            if self._file is None:
                self._file = EventFileWriter(self.logdir, max_queue_size=1000)
            self._file.add_event(event)

    def flush(self) -> None:
        """Write every queued record to the file."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Flush and close the file; later writes fail. Closing twice is a no-op."""
        with self._lock:
            self._closed = True
            file, self._file = self._file, None
        if file is not None:
            file.close()
