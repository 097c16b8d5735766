"""BasisCallback: basis gating in real Keras training, manifest, background work, hooks."""

from __future__ import annotations

import threading

import pytest

import cvml_core
from cvml_core.artifacts.atomic import atomic_write_text
from cvml_core.artifacts.callback import BasisCallback, LogDirError
from cvml_core.artifacts.manifest import read_manifest
from cvml_core.artifacts.worker import BackgroundJobError
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.loader import PluginSource, load_registry
from cvml_core.policy.basis import MissingMetricError


class Notes(BasisCallback):
    """Writes best_<key>.txt in the background; remembers what it was called with."""

    name = "notes"
    strict = True

    def __init__(self, *args, fail_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.due_calls = []
        self.improved_calls = []
        self.fail_at = fail_at
        self.finished = False

    def on_due(self, epoch, improved_keys, logs):
        self.due_calls.append((epoch, list(improved_keys)))

    def on_improved(self, epoch, improved_keys, logs):
        self.improved_calls.append((epoch, list(improved_keys)))

    def snapshot(self, epoch, logs):
        return dict(logs)

    def write(self, job):
        if job.epoch == self.fail_at:
            raise OSError(28, "No space left on device")
        for key in job.keys:
            path = self.folder / f"best_{key}.txt"
            atomic_write_text(path, f"{job.epoch} {job.snapshot[key]}")
            yield self.artifact("note", path, job.epoch, job.logs, key)

    def on_finished(self, logs):
        self.finished = True


class Recorder:
    def __init__(self):
        self.saved = []

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.saved.append((artifact, threading.get_ident()))


@pytest.fixture
def recorder():
    rec = Recorder()
    plugins._default = load_registry({}, [PluginSource("rec", "dist-rec", "1", module=rec)])
    return rec


def test_fit_calls_the_subclass_on_due_epochs_only(tmp_path, tiny_model, tiny_data, recorder):
    x, y = tiny_data
    cb = Notes(tmp_path, {"val_loss": "min", "val_accuracy": "max"}, skip_from_start=2, frequency=2)
    tiny_model().fit(x, y, validation_split=0.25, epochs=7, verbose=0, callbacks=[cb])
    assert [epoch for epoch, _ in cb.due_calls] == [4, 6]
    assert cb.due_calls[0][1] == ["val_loss", "val_accuracy"]  # first due epoch improves all
    assert cb.improved_calls == [call for call in cb.due_calls if call[1]]
    assert cb.finished
    # every file the job wrote is in the manifest and was announced on the training thread
    manifest = cvml_core.Manifest(cb.folder, "notes")
    written = {a["path"] for a in manifest.artifacts}
    assert written == {str(cb.folder / f"best_{key}.txt") for key in ("val_loss", "val_accuracy")}
    assert {a.path for a, _ in recorder.saved} >= written
    assert {thread for _, thread in recorder.saved} == {threading.get_ident()}
    assert manifest.basis_state == cb.policy.state_dict()


def test_a_missing_basis_key_stops_training_naming_present_keys(tmp_path, tiny_model, tiny_data):
    x, y = tiny_data
    cb = Notes(tmp_path, {"val_acc": "max"})
    with pytest.raises(MissingMetricError, match="val_accuracy"):
        tiny_model().fit(x, y, validation_split=0.25, epochs=2, verbose=0, callbacks=[cb])
    assert not (cb.folder / "best_val_acc.txt").exists()


def test_a_log_dir_that_cannot_be_created_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(LogDirError) as info:
        Notes(blocker / "run", {"val_loss": "min"})
    assert str(blocker / "run") in str(info.value)


@pytest.mark.parametrize("log_dir", [None, "", 3])
def test_a_bad_log_dir_value_is_named(log_dir):
    with pytest.raises(ValueError, match="log_dir"):
        Notes(log_dir, {"val_loss": "min"})


def test_a_background_failure_reaches_the_training_thread_and_keeps_the_best(
    tmp_path, tiny_model, tiny_data, drive
):
    x, y = tiny_data
    cb = Notes(tmp_path, {"val_loss": "min"}, fail_at=2)
    with pytest.raises(BackgroundJobError, match="No space left") as info:
        drive(cb, [{"val_loss": 1.0}, {"val_loss": 0.5}, {"val_loss": 0.4}], model=tiny_model())
    assert isinstance(info.value.__cause__, OSError)
    # raised at epoch 3's end or at train end, whichever sees it first; epoch 2's file
    # was never written and the file under the final name is a complete earlier best
    assert (cb.folder / "best_val_loss.txt").read_text() in {"1 1.0", "3 0.4"}
    manifest = cvml_core.Manifest(cb.folder, "notes")
    assert 2 not in {a["epoch"] for a in manifest.artifacts}
    assert manifest.basis_state["best"]["val_loss"]["epoch"] != 2


def test_a_new_callback_on_the_same_log_dir_keeps_the_bests(tmp_path, drive):
    first = drive(Notes(tmp_path, {"val_loss": "min"}), [{"val_loss": 1.0}, {"val_loss": 0.3}])
    assert first.improved_calls == [(1, ["val_loss"]), (2, ["val_loss"])]
    resumed = Notes(tmp_path, {"val_loss": "min"})
    assert resumed.policy.best["val_loss"].value == 0.3
    drive(resumed, [{"val_loss": 0.5}, {"val_loss": 0.2}], start_epoch=2)
    assert resumed.improved_calls == [(4, ["val_loss"])]
    assert (resumed.folder / "best_val_loss.txt").read_text() == "4 0.2"


def test_sample_data_given_by_the_user_wins(tmp_path):
    cb = Notes(tmp_path, {"val_loss": "min"})
    cb.set_sample_data("user x", "user y")
    cb.set_sample_data("dev x", "dev y")
    assert cb.sample_data == ("user x", "user y")


class _Resolver:
    """The cluster_resolver of a multi-worker strategy; running two TF workers is out of
    scope for a unit test, so the chief rule is checked against the resolver alone."""

    def __init__(self, task_type, task_id, jobs):
        self.task_type, self.task_id, self._jobs = task_type, task_id, jobs

    def cluster_spec(self):
        return type("Spec", (), {"as_dict": lambda _self: self._jobs})()


@pytest.mark.parametrize(
    "task_type,task_id,jobs,chief",
    [
        ("worker", 1, {"worker": ["a", "b"]}, False),
        ("worker", 0, {"worker": ["a", "b"]}, True),
        ("worker", 0, {"chief": ["c"], "worker": ["a"]}, False),
        ("chief", 0, {"chief": ["c"], "worker": ["a"]}, True),
    ],
)
def test_only_the_chief_writes_but_every_worker_decides_alike(
    tmp_path, drive, task_type, task_id, jobs, chief
):
    from types import SimpleNamespace

    model = SimpleNamespace(
        distribute_strategy=SimpleNamespace(cluster_resolver=_Resolver(task_type, task_id, jobs))
    )
    logs = [{"val_loss": 1.0}, {"val_loss": 0.5}, {"val_loss": 0.7}]
    cb = drive(Notes(tmp_path / "w", {"val_loss": "min"}), logs, model=model)
    reference = drive(Notes(tmp_path / "single", {"val_loss": "min"}), logs)
    assert cb.policy.state_dict() == reference.policy.state_dict()
    assert cb.chief is chief
    assert (cb.folder / "best_val_loss.txt").exists() is chief
    assert bool(cb.improved_calls) is chief


def test_the_readme_plugin_author_example_runs_and_gets_the_lifecycle(
    tmp_path, tiny_model, tiny_data
):
    import re
    from pathlib import Path

    import numpy as np

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(# my_package.py\n.*?)```", readme, re.S).group(1)
    name, cls = re.search(r'\n([\w-]+) = "my_package:(\w+)"', readme).groups()
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    # as the README's entry point would register it: the name is written there only
    source = PluginSource(name, "my-package", "1.0", target=namespace[cls])
    plugins._default = load_registry({}, [source])
    cb = cvml_core.create_callback(name, tmp_path, {"val_loss": "min"})
    x, y = tiny_data
    model = tiny_model()
    model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[cb])
    saved = np.load(tmp_path / "my-cb" / "best_val_loss.npz")
    assert len(saved.files) == len(model.get_weights())
    manifest = read_manifest(tmp_path / "my-cb")
    assert manifest["basis"] == cb.policy.state_dict()
    assert manifest["artifacts"][-1]["epoch"] == cb.policy.best["val_loss"].epoch


def test_a_callback_class_is_never_renamed_its_instances_carry_the_name(tmp_path):
    from cvml_core.train.resolve import callback_label

    class Unnamed(BasisCallback):
        pass

    registry = load_registry({}, [PluginSource("first-name", "dist", "1.0", target=Unnamed)])
    by_name = registry.create("first-name", tmp_path, {"val_loss": "min"})
    assert by_name.name == "first-name" and by_name.folder == tmp_path / "first-name"
    assert "name" not in vars(Unnamed) and Unnamed.name == "callback"
    assert callback_label(by_name) == "first-name"
    named = Notes(tmp_path, {"val_loss": "min"})  # a class that sets its own name keeps it
    assert named.name == "notes" and callback_label(named) == "notes"


def test_a_failed_write_rolls_the_key_back_so_a_later_lesser_best_saves_again(tmp_path, drive):
    class Lenient(Notes):
        strict = False

    cb = Lenient(tmp_path, {"val_loss": "min"}, fail_at=2)
    logs = [{"val_loss": 1.0}, {"val_loss": 0.3}, {"val_loss": 0.5}]
    with pytest.warns(RuntimeWarning, match=r"notes: save of epoch 2 \(for val_loss\) failed"):
        drive(cb, logs, wait=True)
    # epoch 2's best never got its file, so 0.5 beats the committed best (1.0) at epoch 3
    assert cb.improved_calls == [(1, ["val_loss"]), (2, ["val_loss"]), (3, ["val_loss"])]
    assert (cb.folder / "best_val_loss.txt").read_text() == "3 0.5"
    assert cb.committed["val_loss"].epoch == 3 == cb.policy.best["val_loss"].epoch
