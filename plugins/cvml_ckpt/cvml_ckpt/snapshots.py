"""The snapshot half of a background save of :class:`~cvml_ckpt.callback.CkptCallback`:
where the model's state goes on the training thread (the shadow model, a device copy,
host copies, or nowhere: skipped), and how the worker turns it into a file (the shadow,
built once per run, saved with Keras' own ``save`` / ``save_weights``). A mixin: the
callback holds the state and gives ``model``, ``background``, ``chief``,
``include_optimizer``, ``save_weights_only``, ``ext`` and ``folder``."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvml_ckpt import files, state
from cvml_ckpt.shadow import Shadow, has_assets, state_variables
from cvml_core.artifacts.atomic import temp_path_for
from cvml_core.artifacts.callback import SkipSave
from cvml_core.keras_compat import keras

SNAPSHOT_TO = ("auto", "device", "host")
#: The host memory a snapshot waiting for the shadow may take by default, at least.
MIN_WAITING_BYTES = 16 * 2**20


class NeedsSource(Exception):
    """A shadow built from the config wrote assets: drop the file, write the source."""


@dataclass
class _Snapshot:
    """The model at a save, in one of four places: the ``model.save`` folder the shadow
    is built from (a first save on the training thread, ``where="source"``), the host
    shadow itself (copied on the training thread while no write used it, ``"shadow"``),
    device copies (``"device"``) or numpy copies (``"host"``) of the variables, which
    the worker copies into the shadow before writing it."""

    source: Path
    layout: list[tuple[Any, ...]]
    where: str = "source"
    values: list[Any] | None = None

    @property
    def in_shadow(self) -> bool:
        return self.where == "shadow"


class ShadowSnapshots:
    """Takes a save's snapshot (training thread) and writes it (worker), see the module."""

    model: Any
    background: bool
    chief: bool
    include_optimizer: bool
    save_weights_only: bool
    ext: str
    folder: Path

    def _init_snapshots(
        self, snapshot_to: str, waiting_host_bytes: int | None,
        device_memory: state.MemoryQuery | None,
    ) -> None:
        if snapshot_to not in SNAPSHOT_TO:
            raise ValueError(
                f"snapshot_to must be one of {', '.join(map(repr, SNAPSHOT_TO))}. "
                f"Received: snapshot_to={snapshot_to!r}"
            )
        self.snapshot_to = snapshot_to
        if waiting_host_bytes is not None and (
            isinstance(waiting_host_bytes, bool)
            or not isinstance(waiting_host_bytes, int)
            or waiting_host_bytes < 0
        ):
            raise ValueError(
                "waiting_host_bytes must be an integer >= 0 (bytes) or None (a tenth of "
                f"the state, at least 16 MiB). Received: waiting_host_bytes={waiting_host_bytes!r}"
            )
        self.waiting_host_bytes = waiting_host_bytes
        if device_memory is not None and not callable(device_memory):
            raise ValueError(
                "device_memory must be a callable returning (free_bytes, total_bytes) or "
                f"None. Received: device_memory={device_memory!r}"
            )
        self._device_memory = device_memory
        #: Where the snapshots of this callback went: ``source``, ``shadow``,
        #: ``device``, ``host``, ``skipped``, ``device_fallback`` (out of device memory),
        #: ``rebuilt`` (a shadow built from the config wrote assets: file dropped).
        self.snapshot_counts: dict[str, int] = dict.fromkeys(
            ("source", "shadow", "device", "host", "skipped", "device_fallback", "rebuilt"), 0
        )
        self._config_route = True  # see _builds_from_config
        self._configs: dict[Path, dict[str, Any]] = {}  # source path -> live model's config
        self._shadow: Shadow | None = None
        self._layout: list[tuple[Any, ...]] | None = None  # of this run's source
        self._state_bytes = 0  # one copy of the variables
        self._live: list[Any] = []  # the live variables the source was saved from
        self._device_copies = 0  # snapshots held as device copies (at most one)
        # A non-chief's scratch folders: removed at train end, else (training raised:
        # Keras skips on_train_end) when the callback is collected or the process exits.
        self._scratch: dict[Path, tempfile.TemporaryDirectory[str]] = {}
        self._sources: list[Path] = []  # the model.save files of this run; the last
        # is the shadow's source
        self._in_flight = 0  # snapshots taken and not yet written (they use the shadow)
        self._one_process = True
        self._flight_lock = threading.Lock()

    def snapshot(self, epoch: int, logs: dict[str, Any]) -> _Snapshot | None:
        if not self.background:
            if not self.chief:  # the chief's save reads the model: do the same reads
                with tempfile.TemporaryDirectory(prefix="cvml-ckpt-") as scratch:
                    self._save_live(Path(scratch) / files.best_name("scratch", self.ext))
            return None  # the chief writes from the live model, on this thread
        variables = state_variables(self.model, self.include_optimizer)
        # a shadow built from the config wrote assets (see _write_to): a new source
        from_config = bool(self._sources) and self._sources[-1] in self._configs
        if (self._layout is None or len(variables) != len(self._layout)
                or (from_config and not self._config_route)):
            # First save of this run, or the optimizer was built since: a new source.
            self._layout = state.layout(variables)
            self._state_bytes = state.nbytes(variables)
            self._live = variables
            path = self._source_path(epoch)
            with self._flight_lock:
                self._in_flight += 1
            reads_live = self._worker_reads_live()
            try:
                if reads_live or self._builds_from_config():
                    # The worker builds the shadow (saving the source, or from the
                    # config); the values wait here.
                    values = state.host_copies([v.value for v in variables])
                    if not reads_live:
                        self._configs[path] = keras.saving.serialize_keras_object(self.model)
                    self.snapshot_counts["host"] += 1
                    return _Snapshot(path, self._layout, "host", values)
                self._save_source(path)
            except BaseException:
                with self._flight_lock:
                    self._in_flight -= 1
                raise
            self.snapshot_counts["source"] += 1
            return _Snapshot(path, self._layout)
        source = self._sources[-1]
        with self._flight_lock:
            idle = self._in_flight == 0
            self._in_flight += 1
        try:
            snap = self._take(variables, source, idle)
        except BaseException:
            with self._flight_lock:
                self._in_flight -= 1
            raise
        self.snapshot_counts[snap.where] += 1
        return snap

    def _take(self, variables: list[Any], source: Path, idle: bool) -> _Snapshot:
        """A snapshot of ``variables``, in the place :meth:`_place` chooses."""
        where = self._place(variables, idle)
        if where == "device":
            try:
                copies = state.device_copies(variables)
            except Exception as exc:
                if not state.is_out_of_memory(exc):
                    raise
                self.snapshot_counts["device_fallback"] += 1
                where = self._host_place(idle)
            else:
                with self._flight_lock:
                    self._device_copies += 1
                return _Snapshot(source, self._layout or [], "device", copies)
        if where == "skip":
            self.snapshot_counts["skipped"] += 1
            raise SkipSave()
        if where == "shadow":
            assert self._shadow is not None
            self._shadow.copy_live(variables)
            return _Snapshot(source, self._layout or [], "shadow")
        values = state.host_copies([v.value for v in variables])
        return _Snapshot(source, self._layout or [], "host", values)

    def _place(self, variables: list[Any], idle: bool) -> str:
        """``device``, ``shadow``, ``host`` or ``skip``: see ``snapshot_to``."""
        if not self._one_process:
            # Every process takes the same path (the reads are collective), so never one
            # that depends on this process' writer or device.
            return "host"
        if self.snapshot_to != "host" and self._device_copies == 0:
            if self.snapshot_to == "device":
                return "device"
            query = self._device_memory or (lambda: state.device_memory(variables))
            if state.has_room(self._state_bytes, query()):
                return "device"
        return self._host_place(idle)

    def _host_place(self, idle: bool) -> str:
        shadow = self._shadow
        if idle and shadow is not None and self._sources and shadow.source == self._sources[-1]:
            return "shadow"
        budget = self.waiting_host_bytes
        if budget is None:
            budget = max(self._state_bytes // 10, MIN_WAITING_BYTES)
        return "host" if self._state_bytes <= budget else "skip"

    def _save_source(self, path: Path) -> None:
        """``model.save`` of the live model as an unzipped folder (``zipped=False``): its
        weights file is written and read back a variable at a time, where a ``.keras``
        archive holds the whole of it in memory on both ways."""
        self.model.save(path, zipped=False)

    def _source_path(self, epoch: int) -> Path:
        """Where the shadow's source folder goes: a temporary name in the folder (removed
        at train end, or by the next run after a kill); a scratch folder off ``log_dir``
        on a process that is not the chief."""
        name = f"shadow-epoch{epoch}"
        if self.chief:
            path = temp_path_for(self.folder / name)
        else:
            scratch = tempfile.TemporaryDirectory(prefix="cvml-ckpt-")
            self._scratch[Path(scratch.name)] = scratch
            path = Path(scratch.name) / name
        self._sources.append(path)
        return path

    def release(self, snapshot: _Snapshot | None) -> None:
        if snapshot is not None:
            self._free(snapshot)
            with self._flight_lock:
                self._in_flight -= 1

    def _free(self, snapshot: _Snapshot) -> None:
        """Drop a snapshot's copies (as big as the model) once they are not needed."""
        with self._flight_lock:
            if snapshot.where == "device" and snapshot.values is not None:
                self._device_copies -= 1
            snapshot.values = None

    def _save_live(self, path: Path, weights_only: bool = False) -> bool:
        """Save the live model with Keras' public save; return whether the file holds
        the optimizer state."""
        if self.save_weights_only or weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        # Keras' own save (3 and tf_keras' .keras / .weights.h5) keeps the optimizer
        # whenever the model has one.
        return getattr(self.model, "optimizer", None) is not None

    def _write_to(self, snapshot: _Snapshot | None, tmp: Path, weights_only: bool = False) -> bool:
        """Write the epoch's file to ``tmp``; return whether it holds the optimizer."""
        if snapshot is None:
            return self._save_live(tmp, weights_only)
        if self._shadow is None or self._shadow.source != snapshot.source:
            # Built once per source, also when the job of the source's epoch was replaced.
            self._shadow = self._build_shadow(snapshot.source, snapshot.layout)
        if snapshot.values is not None:
            self._shadow.copy_from(snapshot.values)
            self._free(snapshot)
        if self.save_weights_only or weights_only:
            self._shadow.model.save_weights(tmp)
        else:
            self._shadow.model.save(tmp)
            if self._shadow.from_config and has_assets(tmp):
                # The assets are the config's, not the live model's: never publish
                # them; from now on the first save of a run writes the source.
                self._config_route = False
                self._shadow = None
                raise NeedsSource()
        self._shadow.warm_up()  # written: its values are free to change
        return self._shadow.includes_optimizer

    def _worker_reads_live(self) -> bool:
        """Whether the worker may save the live model while training runs: one process
        (the chief), TensorFlow or torch (JAX's ``fit`` keeps the state apart from the
        variables during an epoch). The values it reads are overwritten by a snapshot's."""
        return (
            self.background and self.chief and self._one_process
            and keras.backend.backend() in ("tensorflow", "torch")
        )

    def _builds_from_config(self) -> bool:
        """Whether the worker builds the shadow from the live model's config (JAX, one
        process, the chief), so that the first save takes only host copies and the
        config, not a ``model.save`` on the training thread. Off for good once a
        ``.keras`` file of such a shadow held assets (:meth:`_write_to`)."""
        return (
            self.background and self.chief and self._one_process and self._config_route
            and keras.backend.backend() == "jax"
        )

    def _build_shadow(self, source: Path, layout: list[tuple[Any, ...]]) -> Shadow:
        config = self._configs.get(source)
        if config is None and not source.exists():  # a first host snapshot (see snapshot)
            self._save_source(source)
        shadow = Shadow(source, self.include_optimizer, layout, config)
        live = self._live
        if self._sources[-1:] == [source] and len(live) == len(layout):
            shadow.prepare(live)
        return shadow

    def _drop_shadow(self) -> None:
        """Free the shadow (as big as the model) and delete its source files; the
        next save builds them again; give the freed memory back to the system."""
        built = self._shadow is not None
        self._shadow = self._layout = None
        self._live = []
        for path in self._sources:
            shutil.rmtree(path, ignore_errors=True)
        for scratch in self._scratch.values():  # a non-chief's scratch folders
            with contextlib.suppress(OSError):
                scratch.cleanup()
        self._sources, self._scratch, self._configs = [], {}, {}
        if built:
            state.give_back_freed_memory()
