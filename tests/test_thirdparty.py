"""The plugin system against really pip-installed third-party packages.

``nox -s thirdparty`` installs tests/fixtures/cvml_example_plugin (the smallest callback
package: entry point ``best-epochs`` in ``cvml.callbacks``), tests/fixtures/cvml_listener_plugin
(a ``cvml_artifact_saved`` hook) and tests/fixtures/cvml_broken_plugin (fails at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cvml_core
from cvml_core.manifest import read_manifest

pytestmark = pytest.mark.thirdparty


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env={**os.environ, **env},
    )


def _cvml_json(**env):
    proc = _run("from cvml_core.cli import main; main(['plugins', '--json'])", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cvml_plugins_lists_the_installed_plugin_and_the_broken_one():
    entries = _cvml_json()
    callbacks = [e for e in entries if "name" in e]
    errors = [e for e in entries if "error" in e]
    assert {
        "name": "best-epochs",
        "summary": "Writes the best epoch of each basis key to best_epochs.txt",
        "distribution": "cvml-example-plugin",
        "version": "1.2.3",
    } in callbacks
    assert [e["distribution"] for e in errors] == ["cvml-broken-plugin"]
    assert "deliberate test failure" in errors[0]["error"]


def test_listing_imports_neither_tensorflow_nor_the_callback_module():
    proc = _run(
        "import sys, cvml_core; cvml_core.available_callbacks(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') "
        "or m == 'cvml_example'))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_strict_mode_makes_the_broken_plugin_an_error():
    proc = _run("import cvml_core; cvml_core.available_callbacks()", CVML_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert "PluginError" in proc.stderr and "cvml-broken-plugin" in proc.stderr


def test_cvml_plugins_selects_and_autoload_can_be_disabled():
    only_example = _cvml_json(CVML_PLUGINS="best-epochs")  # the entry point's name
    assert [e.get("name") for e in only_example] == ["best-epochs"]
    assert _cvml_json(CVML_PLUGINS="listener") == []  # a plugin with hooks only
    by_distribution = _cvml_json(CVML_PLUGINS="cvml-example-plugin")
    assert [e.get("name") for e in by_distribution] == ["best-epochs"]
    none = _cvml_json(CVML_DISABLE_PLUGIN_AUTOLOAD="1")
    assert [e for e in none if e.get("distribution") != "cvml-core"] == []


def test_the_third_party_callback_built_directly_takes_its_entry_point_name(tmp_path):
    from cvml_example import BestEpochsCallback

    cb = BestEpochsCallback(tmp_path, {"val_loss": "min"})
    assert cb.name == "best-epochs" and cb.folder == tmp_path / "best-epochs"


def test_the_third_party_callback_is_created_by_name_and_trains(tmp_path, tiny_model, tiny_data):
    with pytest.warns(RuntimeWarning, match="cvml-broken-plugin"):
        names = [info.name for info in cvml_core.available_callbacks()]
    assert "best-epochs" in names
    cb = cvml_core.create_callback(
        "best-epochs", log_dir=tmp_path, basis_dict={"val_loss": "min", "val_accuracy": "max"}
    )
    assert isinstance(cb, cvml_core.BasisCallback)
    assert cb.name == "best-epochs"  # written once, in the entry point
    x, y = tiny_data
    tiny_model().fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[cb])
    lines = (tmp_path / "best-epochs" / "best_epochs.txt").read_text().splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys == ["val_accuracy", "val_loss"]
    for line in lines:
        key, epoch, value = line.split()
        assert int(epoch) == cb.policy.best[key].epoch and float(value) == cb.policy.best[key].value

    from cvml_listener import SEEN

    assert SEEN and all(a.callback == "best-epochs" for a in SEEN)
    manifest = read_manifest(tmp_path / "best-epochs")
    assert len(manifest["artifacts"]) == len(SEEN)
    # the core's lifecycle: the manifest records each key's best once its file landed
    assert manifest["basis"]["best"] == {
        key: {"value": best.value, "epoch": best.epoch} for key, best in cb.policy.best.items()
    }
