"""docs/plugin-authors.md says what BasisCallback is: its tables are checked against the code."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import cvml_core
from cvml_core.artifacts.callback import BasisCallback

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugin-authors.md").read_text()

#: Public members of BasisCallback that are the core's (TrainInfer, the lifecycle), not
#: for subclasses, so the reference leaves them out.
FOR_THE_CORE = {
    "announce", "wait_for_background", "manifest", "manifest_artifacts",
    "set_sample_data", "writes_files",
}
KERAS_HOOKS = {"on_train_begin", "on_epoch_end", "on_train_end"}


def table(heading):
    """The rows (lists of cells) of the first table after ``heading``."""
    lines = DOC.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def code_name(cell):
    return re.match(r"`(?:self\.|job\.)?(\w+)", cell).group(1)


def test_every_method_row_has_the_signature_of_the_code():
    rows = table("### Methods to override")
    assert rows
    for cell, *_ in rows:
        name = code_name(cell)
        documented = re.match(r"`\w+\((.*?)\)`", cell).group(1).split(", ")
        method = inspect.getattr_static(BasisCallback, name)
        function = method.__func__ if isinstance(method, classmethod) else method
        assert list(inspect.signature(function).parameters) == documented, name


def test_every_class_attribute_row_has_the_default_of_the_code():
    rows = table("### Class attributes to set")
    assert rows
    for cell, default, _ in rows:
        value = getattr(BasisCallback, code_name(cell))
        shown = value.__name__ if isinstance(value, type) else repr(value).replace("'", '"')
        assert f"`{shown}`" == default, cell


def test_every_attribute_row_is_set_on_a_callback(tmp_path):
    cb = BasisCallback(tmp_path, {"loss": "min"})
    cb.set_model(cvml_core.keras_compat.keras.Sequential())
    for cell, _ in table("### Attributes to read"):
        assert hasattr(cb, code_name(cell)), cell
    assert {"best", "basis", "is_due", "skip_from_start", "frequency", "min_delta"} <= set(
        dir(cb.policy)
    )


def test_the_job_rows_are_the_fields_of_save_job():
    documented = [code_name(cell) for cell, _ in table("### The job `write` gets")]
    assert documented == [f.name for f in dataclasses.fields(cvml_core.SaveJob)]


@pytest.mark.parametrize("name", ["staging", "Staged", "atomic_path", "atomic_write_text",
                                  "atomic_write_bytes", "PluginError", "BasisPolicy"])
def test_the_helpers_named_are_public(name):
    assert f"cvml_core.{name}" in DOC and name in cvml_core.__all__


def test_every_public_member_for_subclasses_is_in_the_reference():
    public = {n for n in vars(BasisCallback) if not n.startswith("_")} - KERAS_HOOKS
    missing = sorted(n for n in public - FOR_THE_CORE if f"`{n}" not in DOC
                     and f"`self.{n}" not in DOC)
    assert missing == []
    assert FOR_THE_CORE <= public  # the list stays true
