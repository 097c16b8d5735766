"""Plugin loading and registration, with plugin objects built in the test.

The same code paths run for installed entry points in tests/test_thirdparty.py.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cvml_core
from cvml_core.plugin_host import hookspecs
from cvml_core.plugin_host import loader as plugins
from cvml_core.plugin_host.loader import (
    PluginError,
    PluginSource,
    UnknownCallbackError,
    load_registry,
)
from cvml_core.plugin_host.notify import MissingNotifierError, check_notify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """An importable module ``cvml_test_targets`` defining ``Good`` (not imported yet)."""
    (tmp_path / "cvml_test_targets.py").write_text(
        textwrap.dedent(
            """
            IMPORTED = True

            class Good:
                def __init__(self, **kwargs):
                    self.kwargs = kwargs
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cvml_test_targets", None)
    yield "cvml_test_targets"
    sys.modules.pop("cvml_test_targets", None)


class Registers:
    """A plugin object registering the given (name, target, summary) triples."""

    def __init__(self, *entries):
        self.entries = entries

    @cvml_core.hookimpl
    def cvml_register_callbacks(self, register):
        for entry in self.entries:
            register(*entry)


def source(plugin, distribution="dist-a", version="1.0", name=None):
    return PluginSource(
        name=name or distribution.replace("-", "_"),
        distribution=distribution,
        version=version,
        module=plugin,
    )


def test_registered_names_are_listed_without_importing_the_target(target_module):
    registry = load_registry(
        {}, [source(Registers(("good", f"{target_module}:Good", "A good one\nmore")))]
    )
    assert [c.to_dict() for c in registry.available()] == [
        {"name": "good", "summary": "A good one", "distribution": "dist-a", "version": "1.0"}
    ]
    assert target_module not in sys.modules
    cls = registry.callback_class("good")
    assert cls.__name__ == "Good" and target_module in sys.modules


class _Direct:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_a_class_target_is_created_with_the_arguments():
    registry = load_registry({}, [source(Registers(("direct", _Direct)))])
    plugins._default = registry
    made = cvml_core.create_callback("direct", log_dir="x", basis_dict={"loss": "min"})
    assert isinstance(made, _Direct) and made.kwargs["log_dir"] == "x"


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(target_module):
    def failing_entry_point():
        raise ImportError("no module named 'missing_dependency'")

    broken = PluginSource(
        "broken", "dist-broken", "0.1",
        entry_point=type("EP", (), {"load": staticmethod(failing_entry_point)})(),
    )
    good = source(Registers(("good", f"{target_module}:Good")))
    with pytest.warns(RuntimeWarning, match="dist-broken"):
        registry = load_registry({}, [broken, good])
    assert [c.name for c in registry.available()] == ["good"]
    assert len(registry.errors) == 1
    assert registry.errors[0].distribution == "dist-broken"
    assert "missing_dependency" in registry.errors[0].error


def test_strict_mode_turns_a_plugin_failure_into_an_error():
    with pytest.raises(PluginError, match="dist-a.*CVML_STRICT_PLUGINS"):
        load_registry({"CVML_STRICT_PLUGINS": "1"}, [source(Registers(("Bad Name", _Direct)))])


class RaisesInHook:
    @cvml_core.hookimpl
    def cvml_register_callbacks(self, register):
        register("first", _Direct)
        raise RuntimeError("boom in register hook")


@pytest.mark.parametrize(
    "plugin,expected",
    [
        (RaisesInHook(), "boom in register hook"),
        (Registers(("Bad Name", _Direct)), "lowercase letters"),
        (Registers(("x", "no_such_module_xyz:Thing")), "'no_such_module_xyz' does not exist"),
        (Registers(("x", "not a target")), "module:ClassName"),
        (Registers(("x", 42)), "module:ClassName"),
        (Registers(("x", _Direct), ("x", _Direct)), "registered twice"),
    ],
)
def test_bad_registrations_are_reported_with_the_distribution(plugin, expected):
    ok = source(Registers(("ok", _Direct)), distribution="dist-ok")
    with pytest.warns(RuntimeWarning):
        registry = load_registry({}, [source(plugin, distribution="dist-bad"), ok])
    assert "ok" in {c.name for c in registry.available()}
    assert [e.distribution for e in registry.errors] == ["dist-bad"]
    assert expected in registry.errors[0].error


def test_a_missing_class_is_an_error_at_create_naming_distribution_and_target():
    registry = load_registry({}, [source(Registers(("x", "cvml_core.policy.basis:NoSuchClass")))])
    assert registry.errors == []  # listing imports nothing: the class is looked up on use
    with pytest.raises(PluginError) as info:
        registry.callback_class("x")
    message = str(info.value)
    assert "'x' from dist-a 1.0" in message and "cvml_core.policy.basis:NoSuchClass" in message
    assert "has no attribute 'NoSuchClass'" in message


def callback_source(name, target, distribution="dist-cb", version="2.0", summary="Summary"):
    """What an entry point of group ``cvml.callbacks`` becomes."""
    return PluginSource(name, distribution, version, target=target, summary=summary)


def test_a_callback_entry_point_is_listed_without_import_and_named_once(target_module):
    registry = load_registry({}, [callback_source("good-cb", f"{target_module}:Good")])
    assert [c.to_dict() for c in registry.available()] == [
        {"name": "good-cb", "summary": "Summary", "distribution": "dist-cb", "version": "2.0"}
    ]
    assert target_module not in sys.modules
    cls = registry.callback_class("good-cb")
    assert "name" not in vars(cls)  # never renamed: the registry names its instances
    assert plugins.registered_name(cls) == "good-cb"
    assert registry.create("good-cb").name == "good-cb"


def test_a_class_that_sets_its_own_name_keeps_it():
    class Named:
        name = "own"

    registry = load_registry({}, [callback_source("other", Named)])
    assert registry.callback_class("other").name == "own"
    assert plugins.registered_name(Named) == "own"


@pytest.mark.parametrize(
    "name,target,expected",
    [
        ("Bad", "cvml_core.policy.basis:BasisPolicy", "Received: name='Bad'"),
        ("x", "cvml_core.policy.basis", "Received: target='cvml_core.policy.basis'"),
        ("x", "no_such_module_xyz:Thing", "'no_such_module_xyz' does not exist"),
    ],
)
def test_a_bad_callback_entry_point_is_reported_with_its_distribution(name, target, expected):
    ok = callback_source("ok", _Direct, distribution="dist-ok")
    with pytest.warns(RuntimeWarning, match="dist-bad"):
        registry = load_registry({}, [callback_source(name, target, "dist-bad"), ok])
    assert [c.name for c in registry.available()] == ["ok"]
    assert [e.distribution for e in registry.errors] == ["dist-bad"]
    assert expected in registry.errors[0].error


def test_a_callback_entry_point_and_a_hook_taking_one_name_conflict():
    a = callback_source("same", _Direct, distribution="dist-a", version="1.0")
    b = source(Registers(("same", _Direct), ("other", _Direct)), distribution="dist-b")
    with pytest.warns(RuntimeWarning, match="dist-b"):
        registry = load_registry({}, [a, b])
    assert registry.available() == []  # dist-b is skipped whole, "same" used by neither
    with pytest.raises(PluginError, match="dist-a 1.0, dist-b 1.0"):
        registry.callback_class("same")


def test_installed_callback_entry_points_are_read_from_metadata(tmp_path, monkeypatch):
    info = tmp_path / "cvml_fake-0.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cvml-fake\nVersion: 0.5\nSummary: Fakes it\n"
    )
    (info / "entry_points.txt").write_text(
        "[cvml.callbacks]\nfake = cvml_fake_module:Fake\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [s for s in plugins.installed_plugin_sources() if s.distribution == "cvml-fake"]
    assert found == [
        PluginSource("fake", "cvml-fake", "0.5", target="cvml_fake_module:Fake",
                     summary="Fakes it")
    ]


def test_two_distributions_registering_one_name_is_an_error_naming_both():
    a = source(Registers(("same", _Direct)), distribution="dist-a", version="1.0")
    b = source(Registers(("same", _Direct)), distribution="dist-b", version="2.0")
    with pytest.warns(RuntimeWarning, match="dist-b"):
        registry = load_registry({}, [a, b])
    assert "same" not in {c.name for c in registry.available()}
    with pytest.raises(PluginError) as info:
        registry.callback_class("same")
    assert "dist-a 1.0" in str(info.value) and "dist-b 2.0" in str(info.value)
    assert "CVML_PLUGINS" in str(info.value)


def test_cvml_plugins_picks_by_plugin_or_distribution_name():
    sources = [
        source(Registers(("a", _Direct)), distribution="dist-a", name="plug_a"),
        source(Registers(("b", _Direct)), distribution="dist-b", name="plug_b"),
        source(Registers(("c", _Direct)), distribution="dist-c", name="plug_c"),
    ]
    registry = load_registry({"CVML_PLUGINS": "plug_a, dist-c"}, sources)
    assert [c.name for c in registry.available()] == ["a", "c"]


def test_disable_autoload_loads_no_entry_points(monkeypatch):
    monkeypatch.setattr(
        plugins, "installed_plugin_sources", lambda: pytest.fail("entry points were read")
    )
    registry = load_registry({"CVML_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert registry.errors == []
    assert all(info.distribution == "cvml-core" for info in registry.available())


def test_an_unknown_name_lists_the_available_names_and_suggests_the_closest():
    registry = load_registry({}, [source(Registers(("ckpt", _Direct), ("tflite", _Direct)))])
    with pytest.raises(UnknownCallbackError) as info:
        registry.callback_class("ckp")
    message = str(info.value)
    assert "Did you mean 'ckpt'?" in message and "ckpt, tflite" in message


class UnknownHook:
    @cvml_core.hookimpl
    def cvml_register_callback(self, register):  # typo: no such hook
        pass


def test_a_plugin_implementing_an_unknown_hook_is_reported():
    with pytest.warns(RuntimeWarning):
        registry = load_registry({}, [source(UnknownHook())])
    assert "cvml_register_callback" in registry.errors[0].error


class Recorder:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    @cvml_core.hookimpl
    def cvml_artifact_saved(self, artifact):
        self.calls.append(("saved", artifact))
        if self.fail:
            raise OSError("upload failed")

    @cvml_core.hookimpl
    def cvml_train_begin(self, run):
        self.calls.append(("begin", run))

    @cvml_core.hookimpl
    def cvml_train_end(self, run, logs, error):
        self.calls.append(("end", run, logs, error))


def test_every_hook_reaches_every_plugin_even_after_one_fails():
    failing, healthy = Recorder(fail=True), Recorder()
    registry = load_registry(
        {}, [source(failing, distribution="dist-fail"), source(healthy, distribution="dist-ok")]
    )
    artifact = cvml_core.Artifact("checkpoint", "/tmp/x.keras", 3, {"val_loss": 0.5})
    with pytest.warns(RuntimeWarning, match="dist-fail.*upload failed"):
        registry.call_hook("cvml_artifact_saved", artifact=artifact)
    registry.call_hook("cvml_train_begin", run="run-info")
    error = ValueError("bad batch")
    registry.call_hook("cvml_train_end", run="run-info", logs={"loss": 1.0}, error=error)
    assert healthy.calls == [
        ("saved", artifact),
        ("begin", "run-info"),
        ("end", "run-info", {"loss": 1.0}, error),
    ]


def test_a_failing_hook_is_an_error_in_strict_mode():
    registry = load_registry(
        {"CVML_STRICT_PLUGINS": "1"}, [source(Recorder(fail=True), distribution="dist-fail")]
    )
    artifact = cvml_core.Artifact("checkpoint", "/tmp/x.keras", 3, {})
    with pytest.raises(PluginError, match="dist-fail"):
        registry.call_hook("cvml_artifact_saved", artifact=artifact)


class Notifier:
    """Owns the destination "pager"; refuses a value that is not a str."""

    @cvml_core.hookimpl
    def cvml_validate_notify(self, destinations):
        if "pager" not in destinations:
            return None
        value = destinations["pager"]
        if not isinstance(value, str):
            raise ValueError(f"pager_url must be a str. Received: {value!r}")
        return {"pager": value.strip()}


def test_cvml_validate_notify_checks_the_destinations_its_plugin_owns():
    registry = load_registry({}, [source(Notifier(), distribution="cvml-pager")])
    assert check_notify({"pager": " p://x "}, registry=registry) == {"pager": "p://x"}
    with pytest.raises(ValueError, match="pager_url must be a str"):
        check_notify({"pager": 42}, registry=registry)
    assert check_notify({"pager": None, "teams": ""}, registry=registry) == {}  # off


def test_a_destination_no_plugin_owns_names_the_package_to_install():
    registry = load_registry({}, [source(Notifier(), distribution="cvml-pager")])
    url = "https://example.com/hooks/abc?sig=SECRET9876"
    with pytest.raises(MissingNotifierError) as raised:
        check_notify({"teams": url}, {"teams": "teams_webhook_url"}, registry=registry)
    message = str(raised.value)
    assert "teams_webhook_url=" in message and "pip install cvml-teams" in message
    assert "SECRET" not in message and "9876" in message  # masked


class BadAnswer:
    @cvml_core.hookimpl
    def cvml_validate_notify(self, destinations):
        return ["teams"]


def test_a_validate_notify_hook_must_answer_a_dict():
    registry = load_registry({}, [source(BadAnswer())])
    with pytest.raises(PluginError, match="must return a dict"):
        check_notify({"teams": "https://example.com/x"}, registry=registry)


# -- every hook documented and tested ---------------------------------------------------

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("cvml_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    spec = getattr(hookspecs, hook)
    doc = inspect.getdoc(spec) or ""
    for arg in inspect.signature(spec).parameters:
        assert f":param {arg}:" in doc, f"{hook} does not document {arg}"
    assert "Called" in doc and "return" in doc.lower()
    docs = [ROOT / "README.md", ROOT / "docs" / "plugin-authors.md"]
    assert any(f"`{hook}(" in path.read_text() for path in docs)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_plugins.py"
    ) + inspect.getsource(sys.modules[__name__]).split("# -- every hook")[0]
    assert re.search(rf"\b{hook}\b", tests), f"no test mentions {hook}"


def test_listing_callbacks_imports_no_tensorflow_keras_or_callback_module():
    code = textwrap.dedent(
        """
        import json, sys
        import cvml_core
        infos = cvml_core.available_callbacks()
        targets = {i.target.split(":")[0] for i in infos}
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "keras", "tf_keras") or m in targets)
        print(json.dumps({"names": [i.name for i in infos], "heavy": heavy}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    import json

    result = json.loads(out.strip().splitlines()[-1])
    assert result["heavy"] == []


def test_a_plugin_whose_register_hook_fails_is_skipped_whole():
    class HalfRegisters:
        def __init__(self):
            self.received = []

        @cvml_core.hookimpl
        def cvml_register_callbacks(self, register):
            register("first", _Direct)
            register("Bad Name", _Direct)

        @cvml_core.hookimpl
        def cvml_artifact_saved(self, artifact):
            self.received.append(artifact)  # recorded: a raise here would become a warning

    half = HalfRegisters()
    with pytest.warns(RuntimeWarning, match="skipped"):
        registry = load_registry({}, [source(half, distribution="dist-half")])
    assert "first" not in {c.name for c in registry.available()}
    assert not registry.pm.is_registered(half)
    registry.call_hook("cvml_artifact_saved", artifact="an artifact")
    assert half.received == []  # a skipped plugin receives no hook


@pytest.mark.parametrize(
    "module_text",
    [
        "from cvml_star_source import *\n",
        "try:\n    from cvml_star_source import Target\nexcept ImportError:\n    Target = None\n",
        "import sys\nif sys.version_info >= (3,):\n    class Target:\n        pass\n",
    ],
)
def test_targets_defined_in_blocks_or_by_star_imports_are_accepted(
    tmp_path, monkeypatch, module_text
):
    (tmp_path / "cvml_star_source.py").write_text("class Target:\n    pass\n")
    (tmp_path / "cvml_block_target.py").write_text(module_text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("cvml_block_target", "cvml_star_source"):  # each case imports its own
        monkeypatch.delitem(sys.modules, name, raising=False)
    registry = load_registry({}, [source(Registers(("t", "cvml_block_target:Target")))])
    assert registry.errors == [] and [c.name for c in registry.available()] == ["t"]
    assert registry.callback_class("t").__name__ == "Target"  # imported at create time


def test_a_registering_hook_may_leave_its_argument_out():
    class Quiet:
        @cvml_core.hookimpl
        def cvml_register_callbacks(self):
            self.called = True

    quiet = Quiet()
    registry = load_registry({}, [source(quiet)])
    assert registry.errors == [] and quiet.called
