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
from cvml_core.artifacts.manifest import read_manifest

pytestmark = pytest.mark.thirdparty


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env={**os.environ, **env},
    )


def _cvml_json(status=0, **env):
    """``cvml plugins --json``, expecting exit ``status`` (1: a plugin failed to load)."""
    proc = _run("import sys; from cvml_core.cli import main; sys.exit(main(['plugins', '--json']))",
                **env)
    assert proc.returncode == status, proc.stderr
    return json.loads(proc.stdout)


def test_cvml_plugins_lists_the_installed_plugin_and_the_broken_one():
    entries = _cvml_json(status=1)  # the broken plugin failed to load
    callbacks = [e for e in entries if "name" in e]
    errors = [e for e in entries if "error" in e]
    assert {
        "name": "best-epochs",
        "summary": "Writes best_<key>.json with the epoch and metrics of each basis key's best",
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
    # a plugin with hooks only: no callback, listed as a hook plugin
    assert _cvml_json(CVML_PLUGINS="listener") == [{
        "hook_plugin": "listener", "distribution": "cvml-listener-plugin", "version": "0.1.0",
        "hooks": ["cvml_artifact_saved"],
    }]
    by_distribution = _cvml_json(CVML_PLUGINS="cvml-example-plugin")
    assert [e.get("name") for e in by_distribution] == ["best-epochs"]
    none = _cvml_json(CVML_DISABLE_PLUGIN_AUTOLOAD="1")
    assert [e for e in none if e.get("distribution") != "cvml-core"] == []


def test_the_third_party_callback_built_directly_takes_its_entry_point_name(tmp_path):
    from cvml_example import BestEpochsCallback

    cb = BestEpochsCallback(tmp_path, {"val_loss": "min"}, indent=2, frequency=2)
    assert cb.name == "best-epochs" and cb.folder == tmp_path / "best-epochs"
    assert cb.indent == 2 and cb.policy.frequency == 2  # its option, and the schedule's


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
    for key, best in cb.policy.best.items():
        record = json.loads((tmp_path / "best-epochs" / f"best_{key}.json").read_text())
        assert (record["key"], record["epoch"], record["value"]) == (key, best.epoch, best.value)
        assert record["metrics"][key] == best.value
    assert sorted(p.name for p in (tmp_path / "best-epochs").glob("best_*")) == [
        "best_val_accuracy.json", "best_val_loss.json"
    ]

    from cvml_listener import SEEN

    assert SEEN and all(a.callback == "best-epochs" for a in SEEN)
    manifest = read_manifest(tmp_path / "best-epochs")
    assert len(manifest["artifacts"]) == len(SEEN)
    # the core's lifecycle: the manifest records each key's best once its file landed
    assert manifest["basis"]["best"] == {
        key: {"value": best.value, "epoch": best.epoch} for key, best in cb.policy.best.items()
    }


def test_an_error_in_the_third_party_init_names_the_callback_and_its_distribution(tmp_path):
    with pytest.warns(RuntimeWarning, match="cvml-broken-plugin"), pytest.raises(
        cvml_core.PluginError,
        match=r"^callback 'best-epochs' \(cvml-example-plugin 1\.2\.3\) could not be created: "
              r"ValueError: indent must be None or an integer >= 0\. Received: indent='2'$",
    ):
        cvml_core.create_callback("best-epochs", tmp_path, {"val_loss": "min"}, indent="2")
