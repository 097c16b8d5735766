"""Fixtures of the ckpt tests: a hook recorder and manifest helpers."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

import cvml_core
from cvml_core.artifacts.manifest import HISTORY_NAME, MANIFEST_NAME
from cvml_core.artifacts.manifest import read_manifest as read_folder_manifest
from cvml_core.plugin_host import loader as plugins


class ArtifactRecorder:
    """A plugin object that keeps every artifact announced through cvml_artifact_saved."""

    def __init__(self):
        self.seen = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.seen.append(artifact)


@pytest.fixture
def announced(monkeypatch):
    """The artifacts announced during the test (a recorder plugin is the only plugin)."""
    recorder = ArtifactRecorder()
    registry = plugins.load_registry(
        environ={},
        sources=[plugins.PluginSource("recorder", "test-recorder", "0", module=recorder)],
    )
    monkeypatch.setattr(plugins, "_default", registry)
    return recorder.seen


def read_manifest(log_dir):
    return read_folder_manifest(Path(log_dir) / "ckpt")


def saves(log_dir, role="best"):
    """``{basis_key: [epochs]}`` of the manifest entries of ``role``, in order."""
    found = {}
    for entry in read_manifest(log_dir)["artifacts"]:
        if entry["details"]["role"] == role:
            found.setdefault(entry["basis_key"], []).append(entry["epoch"])
    return found


def file_epoch(path):
    """The epoch the manifest beside ``path`` records for it (its last entry)."""
    path = Path(path)
    manifest = read_folder_manifest(path.parent)
    entries = [e for e in manifest["artifacts"] if Path(e["path"]).name == path.name]
    assert entries, f"{path.name} is not in the manifest"
    return entries[-1]["epoch"]


def ckpt_files(log_dir):
    manifest = (MANIFEST_NAME, HISTORY_NAME)
    return sorted(p.name for p in (Path(log_dir) / "ckpt").iterdir() if p.name not in manifest)


@pytest.fixture
def ck():
    """Helpers to read what the callback wrote: ``ck.manifest``, ``ck.saves``, ``ck.files``,
    ``ck.epoch``."""
    import types

    return types.SimpleNamespace(
        manifest=read_manifest, saves=saves, files=ckpt_files, epoch=file_epoch
    )


@pytest.fixture
def drive(drive):
    """The root ``drive``, each save's write ended before the next epoch's: a newer
    checkpoint supersedes one still waiting (``CkptCallback.supersede``), so without
    this the files written would depend on timing. Back-to-back saves are tested apart
    (``test_snapshot.py``)."""
    return functools.partial(drive, wait=True)
