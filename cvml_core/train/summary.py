"""A run's record: each finished epoch's logs, the bests per basis key, the artifacts,
and the table ``TrainInfer`` prints at the end."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from cvml_core.artifacts.artifact import Artifact
from cvml_core.keras_compat import Callback
from cvml_core.plugin_host.run_info import RunInfo, latest_artifacts
from cvml_core.policy.basis import BasisPolicy, KeyBest
from cvml_core.train.protocol import ListsArtifacts, TracksBasis
from cvml_core.train.table import format_table

_ARTIFACT_FIELDS = {f.name for f in fields(Artifact)}


class RunRecorder(Callback):
    """Keeps each finished epoch's logs, also when training later raises, and the best
    of each basis key that no callback tracks (judged by a :class:`BasisPolicy` of its
    own, every epoch due)."""

    def __init__(self, untracked: Mapping[str, str]) -> None:
        super().__init__()
        self.logs: dict[str, Any] = {}
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.policies = {key: BasisPolicy({key: mode}) for key, mode in untracked.items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.logs = dict(logs or {})
        self.epochs.append(epoch + 1)
        for key, value in self.logs.items():
            try:
                self.history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                continue
        for key, policy in self.policies.items():
            if key in self.logs:
                policy.update(epoch + 1, self.logs)


def tracked_basis(callbacks: Iterable[Any]) -> dict[str, str]:
    """The basis keys the callbacks track, each with its mode."""
    basis: dict[str, str] = {}
    for cb in callbacks:
        if isinstance(cb, TracksBasis):
            for key, mode in cb.policy.basis.items():
                basis.setdefault(key, mode)
    return basis


def bests(
    basis: Mapping[str, str], callbacks: Iterable[Any], recorder: RunRecorder
) -> dict[str, dict[str, Any]]:
    """Per basis key, the best as the basis policies decided it: the callbacks' that
    track the key (which include bests restored from earlier runs), else the recorder's."""
    callbacks = list(callbacks)
    result: dict[str, dict[str, Any]] = {}
    for key, mode in basis.items():
        found: list[KeyBest] = [
            cb.policy.best[key] for cb in callbacks
            if isinstance(cb, TracksBasis) and key in cb.policy.best
        ]
        if key in recorder.policies:
            found.append(recorder.policies[key].best[key])
        known = [(kb.value, kb.epoch) for kb in found if kb.value is not None]
        if not known:
            result[key] = {"value": None, "epoch": None}
            continue
        pick = min if mode == "min" else max
        value, epoch = pick(known, key=lambda best: best[0])
        result[key] = {"value": value, "epoch": epoch}
    return result


def artifacts_of(callbacks: Iterable[Any]) -> list[Artifact]:
    """Every artifact the callbacks' manifests record, oldest first per callback."""
    return [
        Artifact(**{k: v for k, v in entry.items() if k in _ARTIFACT_FIELDS})
        for cb in callbacks if isinstance(cb, ListsArtifacts)
        for entry in cb.manifest_artifacts()
    ]


def new_artifacts(before: list[Artifact], after: list[Artifact]) -> list[Artifact]:
    """The artifacts of ``after`` that ``before`` did not hold (files of this run)."""
    seen = {(a.callback, a.path, a.epoch, a.kind) for a in before}
    return [a for a in after if (a.callback, a.path, a.epoch, a.kind) not in seen]


def summary_text(run: RunInfo, artifacts: list[Artifact]) -> str:
    """Per basis key: mode, best value, its epoch and the files that stand for it;
    then the other files (``basis_key`` None)."""
    standing = latest_artifacts(artifacts)
    rows = []
    for key, best in run.best.items():
        paths = [f"{a.callback}: {a.path}" for a in standing if a.basis_key == key]
        value = best.get("value")
        rows.append([
            key,
            run.basis_dict.get(key, ""),
            "-" if value is None else f"{value:.4g}",
            "-" if best.get("epoch") is None else str(best["epoch"]),
            "; ".join(paths) or "-",
        ])
    lines = [f"Training finished: epochs {run.start_epoch + 1}-{run.epochs_done} "
             f"in {run.duration or 0.0:.1f} s"]
    if rows:
        lines.append(format_table(rows, ["basis key", "mode", "best", "epoch", "artifacts"]))
    for artifact in standing:
        if artifact.basis_key is None:
            lines.append(f"{artifact.callback} {artifact.kind} (epoch {artifact.epoch}): "
                         f"{artifact.path}")
    return "\n".join(lines)
