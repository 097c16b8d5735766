"""The ``cvml`` command."""

from __future__ import annotations

import json
import subprocess
import sys

from cvml_core import cli
from cvml_core.plugin_host.loader import PluginSource, load_registry


class Registers:
    def __init__(self, *entries):
        self.entries = entries

    from cvml_core import hookimpl

    @hookimpl
    def cvml_register_callbacks(self, register):
        for entry in self.entries:
            register(*entry)


def _registry(warn=True):
    target = "cvml_core.cli:main"
    good = PluginSource("p", "dist-good", "1.0", module=Registers(("good", target, "Does good")))
    bad = PluginSource("q", "dist-bad", "0.1", module=Registers(("Bad!", target)))
    return load_registry({}, [good, bad], warn=warn)


def test_plugins_table_lists_callbacks_and_load_errors(monkeypatch, capsys, recwarn):
    monkeypatch.setattr(cli, "load_registry", _registry)
    assert cli.main(["plugins"]) == 1  # a plugin failed to load
    assert [w for w in recwarn if "dist-bad" in str(w.message)] == []  # printed once, below
    out, err = capsys.readouterr()
    header, rule, row = out.splitlines()[:3]
    assert header.split() == ["name", "distribution", "version", "summary"]
    assert row.split()[:3] == ["good", "dist-good", "1.0"] and row.endswith("Does good")
    assert "dist-bad" in err and "Bad!" in err


def test_plugins_json_has_callbacks_and_errors(monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_registry", _registry)
    assert cli.main(["plugins", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data[0] == {
        "name": "good", "summary": "Does good", "distribution": "dist-good", "version": "1.0"
    }
    assert data[1]["distribution"] == "dist-bad" and "Bad!" in data[1]["error"]
    assert len(data) == 2


def test_cvml_plugins_imports_no_tensorflow():
    code = (
        "import sys; from cvml_core.cli import main; main(['plugins', '--json']); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    payload = json.loads(out.split("HEAVY")[0])
    assert all(set(entry) in ({"name", "summary", "distribution", "version"},
                              {"hook_plugin", "distribution", "version", "hooks"},
                              {"distribution", "error"}) for entry in payload)


class Listens:
    from cvml_core import hookimpl

    @hookimpl
    def cvml_train_end(self, run, logs, error):
        pass


def test_hook_plugins_are_listed_apart_from_callbacks(monkeypatch, capsys):
    def registry(warn=True):
        target = "cvml_core.cli:main"
        good = PluginSource("p", "dist-good", "1.0", module=Registers(("good", target)))
        notes = PluginSource("notes", "dist-notes", "2.0", module=Listens())
        return load_registry({}, [good, notes], warn=warn)

    monkeypatch.setattr(cli, "load_registry", registry)
    assert cli.main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in data if "name" in e] == ["good"]  # callbacks keep their shape
    assert [e for e in data if "hook_plugin" in e] == [{
        "hook_plugin": "notes", "distribution": "dist-notes", "version": "",
        "hooks": ["cvml_train_end"],
    }]  # "dist-notes" is not installed: no version found
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    callbacks, hooks = out.split("Hook plugins:")
    assert "good" in callbacks and "notes" not in callbacks
    assert hooks.split("\n")[3].split() == ["notes", "dist-notes", "cvml_train_end"]
