"""Test sessions. ``python -m nox`` runs the default set, as CI does.

Every session installs from this repository's own files into a fresh virtual
environment; all of them share one pip cache, so TensorFlow downloads once.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = {"ckpt": "cvml_ckpt", "tb": "cvml_tb", "tflite": "cvml_tflite"}
FIXTURES = ROOT / "tests" / "fixtures"
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100"]

# CI's set: each test runs once (plugin tests in their plugin's own environment).
nox.options.sessions = ["lint", "core", "thirdparty", "plugin"]
nox.options.default_venv_backend = "venv"
os.environ.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def _plugin_path(name: str) -> str:
    return str(ROOT / "plugins" / PLUGINS[name])


def _existing_plugins() -> list[str]:
    return [n for n in PLUGINS if (ROOT / "plugins" / PLUGINS[n] / "pyproject.toml").exists()]


def _pytest(session: nox.Session, *args: str) -> None:
    session.run("pytest", "-p", "no:cacheprovider", *args, *session.posargs)


def _install_all(session: nox.Session) -> None:
    plugins = [f"{_plugin_path(n)}[test]" for n in _existing_plugins()]
    session.install(str(ROOT), *plugins, *TEST_DEPS, "scikit-learn")


@nox.session
def tests(session: nox.Session) -> None:
    """Every plugin installed together; all tests but the third-party ones, in one run."""
    _install_all(session)
    _pytest(session, "-m", "not thirdparty", "tests")


@nox.session
def core(session: nox.Session) -> None:
    """Every plugin installed together; the core, TrainInfer, demo and integration tests."""
    _install_all(session)
    ignored = [f"--ignore={ROOT / 'tests' / name}" for name in PLUGINS]
    _pytest(session, "-m", "not thirdparty", *ignored, "tests")


@nox.session
def thirdparty(session: nox.Session) -> None:
    """The core with two third-party fixture packages really pip-installed."""
    session.install(
        str(ROOT),
        str(FIXTURES / "cvml_example_plugin"),
        str(FIXTURES / "cvml_broken_plugin"),
        *TEST_DEPS,
    )
    session.env["CVML_REQUIRE_FIXTURES"] = "1"
    _pytest(session, "-m", "thirdparty", str(ROOT / "tests" / "test_thirdparty.py"))


@nox.session
@nox.parametrize("name", list(PLUGINS))
def plugin(session: nox.Session, name: str) -> None:
    """One plugin installed alone with the core: its tests, and ``cvml plugins`` lists only it."""
    if name not in _existing_plugins():
        session.skip(f"plugins/{PLUGINS[name]} does not exist yet")
    session.install(str(ROOT), f"{_plugin_path(name)}[test]", *TEST_DEPS)
    listed = session.run("cvml", "plugins", "--json", silent=True, stderr=None)
    import json

    names = sorted(entry["name"] for entry in json.loads(listed or "[]") if "name" in entry)
    if names != [name]:
        session.error(f"cvml plugins lists {names}; expected only [{name!r}]")
    _pytest(session, str(ROOT / "tests" / name))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on everything, mypy on the core (no TensorFlow needed)."""
    session.install("ruff", "mypy", "pluggy", "importlib-metadata", "nox")
    session.run("ruff", "check", ".")
    session.run("mypy", "cvml_core")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: ``cvml demo`` with every plugin installed."""
    session.install(str(ROOT), *[_plugin_path(n) for n in _existing_plugins()], "scikit-learn")
    session.run("cvml", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Keras' own callbacks (not tests): ``nox -s bench -- <script>``."""
    session.install(
        str(ROOT), *[_plugin_path(n) for n in _existing_plugins()],
        "tensorboard", "ai-edge-litert", "psutil",
    )
    scripts = session.posargs or sorted(str(p) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for script in scripts:
        session.run("python", script)
