"""Shared test fixtures: a fresh plugin registry per test, tiny Keras models, a logs driver."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cvml_core  # noqa: E402
from cvml_core.plugin_host import loader as plugins  # noqa: E402
from cvml_core.plugin_host.loader import PluginSource  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test loads plugins anew, with no plugin environment variables set."""
    for var in ("CVML_PLUGINS", "CVML_DISABLE_PLUGIN_AUTOLOAD", "CVML_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset_registry()
    yield
    plugins.reset_registry()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``thirdparty`` need the fixture packages pip-installed.

    Without them they are skipped, unless CVML_REQUIRE_FIXTURES=1 (set by
    ``nox -s thirdparty``), where a missing fixture is a failure.
    """
    installed = importlib.util.find_spec("cvml_example") is not None
    if installed or os.environ.get("CVML_REQUIRE_FIXTURES") == "1":
        return
    skip = pytest.mark.skip(reason="fixture plugins not installed; run: nox -s thirdparty")
    for item in items:
        if "thirdparty" in item.keywords:
            item.add_marker(skip)


def make_data(n=64, features=8, classes=2, seed=0):
    """A learnable toy classification set: the class is the argmax of feature sums."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, features)).astype("float32")
    y = (x[:, : features // 2].sum(1) > x[:, features // 2 :].sum(1)).astype("int32") % classes
    return x, y


@pytest.fixture
def tiny_cnn():
    """A factory of small compiled CNNs for 8x8x3 images, 2 classes (cvml's Keras)."""
    from cvml_core.keras_compat import keras

    def build(seed=0, shape=(8, 8, 3)):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input(shape),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return build


@pytest.fixture
def tiny_data():
    return make_data()


@pytest.fixture
def tiny_model():
    """A factory of small compiled dense classifiers (a few hundred weights)."""
    import keras

    def build(features=8, classes=2, seed=0):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((features,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(classes, activation="softmax"),
            ]
        )
        model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    return build


@pytest.fixture
def drive():
    """Feed a chosen sequence of logs to a callback, as ``fit`` would, without training.

    ``drive(callback, [logs_epoch1, logs_epoch2, ...], model=None, start_epoch=0)``
    calls on_train_begin, on_epoch_end per epoch (0-based as Keras passes them,
    starting at ``start_epoch``) and on_train_end; with ``wait=True`` each epoch's
    background write ends before the next epoch.
    """

    def run(callback, logs_sequence, model=None, start_epoch=0, end=True, wait=False):
        if model is not None:
            callback.set_model(model)
        callback.on_train_begin({})
        for offset, logs in enumerate(logs_sequence):
            callback.on_epoch_begin(start_epoch + offset, {})
            callback.on_epoch_end(start_epoch + offset, dict(logs))
            if wait:
                callback.wait_for_background()
        if end:
            callback.on_train_end(dict(logs_sequence[-1]) if logs_sequence else {})
        return callback

    return run


class RunHooks:
    """A plugin recording what ``cvml_train_begin`` / ``cvml_train_end`` receive."""

    def __init__(self):
        self.begin = []
        self.end = []

    @cvml_core.hookimpl
    def cvml_train_begin(self, run):
        self.begin.append(run)

    @cvml_core.hookimpl
    def cvml_train_end(self, run, logs, error):
        self.end.append((run, dict(logs), error))


@pytest.fixture
def run_hooks():
    """A :class:`RunHooks` plugin registered for this test."""
    plugin = RunHooks()
    plugins.get_registry().add(
        PluginSource(name="probe", distribution="cvml-probe", version="0", module=plugin)
    )
    return plugin
