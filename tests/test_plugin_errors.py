"""What a plugin author sees when a plugin fails: `cvml plugins`, create_callback, TrainInfer.

The packages here are "installed" as a ``.dist-info`` folder on ``PYTHONPATH`` (the
metadata pip writes, read by the same ``importlib.metadata`` lookup), and the command
runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import cvml_core
from cvml_core import cli
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.loader import PluginError, PluginSource, load_registry

CSVLOG = '''
import cvml_core

class CsvLog(cvml_core.BasisCallback):
    pass
'''

CSVLOG_PLUGIN = '''
import cvml_core

@cvml_core.hookimpl
def cvml_register_callbacks(register):
    register("csvlog", "cvml_csvlog:CsvLog", summary="Logs bests to CSV")
'''


CREATE_CSVLOG = "import cvml_core; cvml_core.create_callback('csvlog', 'x', {'loss': 'min'})"


def install(tmp_path, entry_points, modules=(), dist="cvml-csvlog"):
    """A distribution ``dist`` with ``entry_points`` (entry_points.txt) and modules."""
    info = tmp_path / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\nSummary: Logs bests to CSV\n"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, text in dict(modules).items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def run(site, code=None, args=("plugins",), **env):
    """``python -m cvml_core <args>`` (or ``-c code``) with ``site`` on the path."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CVML_")}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = ["-c", code] if code else ["-m", "cvml_core", *args]
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True,
        env={**environ, **env}, timeout=120,
    )


def test_a_typo_in_the_entry_points_module_fails_cvml_plugins_once_and_names_it(tmp_path):
    site = install(tmp_path, "[cvml.callbacks]\ncsvlog = cvml_csvlgo:CsvLog\n",
                   {"cvml_csvlog": CSVLOG})
    proc = run(site)
    assert proc.returncode == 1
    assert "csvlog" not in proc.stdout
    failed = [line for line in proc.stderr.splitlines() if "cvml-csvlog" in line]
    assert len(failed) == 1, proc.stderr  # the reason once: no warning repeats it
    assert "'cvml_csvlgo' does not exist" in failed[0]
    assert "Warning" not in proc.stderr

    as_json = run(site, args=("plugins", "--json"))
    assert as_json.returncode == 1 and '"distribution": "cvml-csvlog"' in as_json.stdout

    created = run(site, CREATE_CSVLOG)
    last = created.stderr.strip().splitlines()[-1]
    assert last.startswith("cvml_core.plugin_host.registry.UnknownCallbackError: callback "
                           "'csvlog' failed to load (cvml-csvlog)"), created.stderr
    assert "'cvml_csvlgo' does not exist" in last


def test_only_the_failed_plugin_selected_says_it_failed_not_that_none_is_installed(tmp_path):
    site = install(tmp_path, "[cvml.callbacks]\ncsvlog = cvml_csvlgo:CsvLog\n")
    proc = run(site, CVML_PLUGINS="csvlog")
    assert proc.returncode == 1
    assert proc.stdout.strip() == "No cvml callbacks loaded: 1 plugin(s) failed (below)."


def test_a_misspelled_entry_point_group_is_a_load_error(tmp_path):
    site = install(tmp_path, "[cvml.callback]\ncsvlog = cvml_csvlog:CsvLog\n",
                   {"cvml_csvlog": CSVLOG})
    proc = run(site)
    assert proc.returncode == 1
    assert "cvml-csvlog: entry point group 'cvml.callback' is not one cvml reads (did you " \
           "mean 'cvml.callbacks'?): its entry points ['csvlog'] are ignored" in proc.stderr
    created = run(site, CREATE_CSVLOG)
    assert "callback 'csvlog' failed to load (cvml-csvlog)" in created.stderr


def test_the_right_group_loads_the_same_package(tmp_path):  # the control of the two above
    site = install(tmp_path, "[cvml.callbacks]\ncsvlog = cvml_csvlog:CsvLog\n",
                   {"cvml_csvlog": CSVLOG})
    proc = run(site)
    assert "cvml-csvlog" not in proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines() if "csvlog" in line] == [
        ["csvlog", "cvml-csvlog"]
    ]


def test_cvml_plugins_naming_a_callback_registered_from_code_says_what_it_takes(tmp_path):
    site = install(tmp_path, "[cvml]\ncsvlog_plugin = cvml_csvlog_plugin\n",
                   {"cvml_csvlog": CSVLOG, "cvml_csvlog_plugin": CSVLOG_PLUGIN})
    assert "csvlog" in run(site).stdout  # registered from the plugin's code
    proc = run(site, CVML_PLUGINS="csvlog")
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        "No cvml callbacks among the plugins selected by CVML_PLUGINS='csvlog'."
    )
    assert "CVML_PLUGINS names 'csvlog', which matches no installed plugin" in proc.stderr
    assert "csvlog_plugin" in proc.stderr and "cvml-csvlog" in proc.stderr
    assert "No cvml callbacks installed" not in proc.stdout
    assert "csvlog" in run(site, CVML_PLUGINS="csvlog_plugin").stdout


def test_strict_cvml_plugins_is_one_error_line_without_a_traceback(tmp_path):
    site = install(tmp_path, "[cvml.callbacks]\ncsvlog = cvml_csvlgo:CsvLog\n")
    proc = run(site, CVML_STRICT_PLUGINS="1")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("cvml plugins: error: plugin distribution 'cvml-csvlog' failed")


def test_the_help_is_plain_text_and_gives_the_exit_status(capsys):
    for argv in (["--help"], ["plugins", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "``" not in out
    assert "exit 1 if a plugin failed" in out
    assert "1 when one failed to load" in out


class Boom(cvml_core.BasisCallback):
    """Builds its folder (the base class does), then fails."""

    def __init__(self, log_dir, basis_dict, **kwargs):
        super().__init__(log_dir, basis_dict, **kwargs)
        raise KeyError("csv_path")


class Fine(cvml_core.BasisCallback):
    pass


class Registers:
    @cvml_core.hookimpl
    def cvml_register_callbacks(self, register):
        register("fine", Fine)
        register("boom", Boom)


@pytest.fixture
def boom_registry():
    plugins._default = load_registry({}, [PluginSource("p", "dist-boom", "3.1",
                                                       module=Registers())])


def test_a_callback_whose_init_raises_is_named_with_its_distribution(tmp_path, boom_registry):
    with pytest.raises(PluginError) as info:
        cvml_core.create_callback("boom", tmp_path, {"loss": "min"})
    assert str(info.value) == (
        "callback 'boom' (dist-boom 3.1) could not be created: KeyError: 'csv_path'"
    )
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("existing", [False, True])
def test_train_infer_leaves_no_empty_folder_when_a_callback_fails_to_build(
    tmp_path, tiny_model, tiny_data, boom_registry, existing
):
    log_dir = tmp_path / "run"
    if existing:
        log_dir.mkdir()
        (log_dir / "notes.txt").write_text("mine")
    ti = cvml_core.TrainInfer(tiny_model(), log_dir=log_dir, basis_dict={"loss": "min"})
    with pytest.raises(PluginError, match="'boom' \\(dist-boom 3.1\\)"):
        ti.train(tiny_data, None, 16, 1, callbacks=["fine", "boom"], show_results=0)
    if existing:
        assert sorted(p.name for p in log_dir.iterdir()) == ["notes.txt"]
    else:
        assert not log_dir.exists()
