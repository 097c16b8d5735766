"""``cvml demo``: the main job on a bundled data set, with every installed callback.

A small CNN learns scikit-learn's 8x8 handwritten digits (1797 images shipped inside
scikit-learn: no download) through :class:`cvml_core.train.train_infer.TrainInfer`, with every
callback the installed plugins register, into ``runs/demo`` (or ``--log-dir``). At
the end it prints where each artifact is, the best metrics and what each callback
adds (``demo_report``: the ``.tflite`` verification figures, the TensorBoard command).
Each callback class chooses its own options (``demo_options``). Set
``CVML_TEAMS_WEBHOOK_URL`` to also get Teams cards.

A ``log_dir`` left by an earlier demo (it holds a ``.cvml-demo`` marker) is replaced;
any other non-empty folder is refused, never deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASIS = {"val_loss": "min", "val_accuracy": "max"}
MARKER = ".cvml-demo"
BATCH_SIZE = 32
IMAGE_SHAPE = (8, 8, 1)


@dataclass(frozen=True)
class Demo:
    """What the demo tells each callback class's ``demo_options(demo)``."""

    epochs: int
    image_shape: tuple[int, ...] = IMAGE_SHAPE
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_data(seed: int = 0) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The digits as float32 images in [0, 1], shape (n, 8, 8, 1): (train, dev) 80/20."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_dev = len(x) // 5
    return (x[n_dev:], y[n_dev:]), (x[:n_dev], y[:n_dev])


def build_model(seed: int = 0) -> Any:
    """A small CNN (about 6k weights) for 8x8x1 images, 10 classes, compiled."""
    from cvml_core.keras_compat import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE, name="digit"),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _prepare_log_dir(log_dir: Path | str) -> str | None:
    """Make ``log_dir`` an empty demo folder; return an error message if it cannot be."""
    if isinstance(log_dir, str):  # a URL: the same rules on the store
        return _prepare_store(log_dir)
    if log_dir.exists() and not log_dir.is_dir():
        return f"--log-dir {log_dir} exists and is not a folder"
    if log_dir.is_dir() and any(log_dir.iterdir()):
        if not (log_dir / MARKER).exists():
            return (
                f"--log-dir {log_dir} is not empty and was not written by `cvml demo`; "
                "pick a new or empty folder"
            )
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / MARKER).write_text("written by `cvml demo`; the next demo run replaces it\n")
    return None


def _prepare_store(url: str) -> str | None:
    from cvml_core.artifacts.storage import mask, open_store

    try:
        store = open_store(url)
        if not store.is_empty():
            if not store.exists(MARKER):
                return (f"--log-dir {mask(url)} is not empty and was not written by "
                        "`cvml demo`; pick a new or empty folder")
            store.remove_all()
        store.probe(f"--log-dir {mask(url)}")
        store.write_bytes(MARKER, b"written by `cvml demo`; the next demo run replaces it\n")
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def _build_callbacks(log_dir: Path | str, epochs: int) -> list[Any]:
    """One of every installed callback, with the options its class asks for."""
    from cvml_core.plugin_host.loader import get_registry
    from cvml_core.train.protocol import InDemo

    registry = get_registry()
    callbacks = []
    for info in registry.available():
        try:
            cls = registry.callback_class(info.name)
            options = cls.demo_options(Demo(epochs)) if issubclass(cls, InDemo) else {}
            callbacks.append(cls(str(log_dir), dict(BASIS), **options))
        except Exception as exc:  # a broken third-party callback must not stop the demo
            print(
                f"cvml demo: skipping callback {info.name!r} ({info.distribution}): "
                f"{type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
    return callbacks


def _report(train_infer: Any, log_dir: Path | str) -> None:
    from cvml_core.train.protocol import InDemo, WritesFolder
    from cvml_core.train.resolve import callback_label

    run = train_infer.run
    print("\nArtifacts:")
    latest = run.latest_artifacts()
    if not latest:
        print("  none (no callback plugin installed? see `cvml plugins`)")
    for artifact in latest:
        what = f"best {artifact.basis_key}" if artifact.basis_key else artifact.kind
        print(f"  {artifact.callback:8s} {artifact.path}  ({what}, epoch {artifact.epoch})")
    for cb in train_infer.callbacks:
        if isinstance(cb, WritesFolder):
            print(f"  {callback_label(cb):8s} folder: {getattr(cb, 'store', cb.folder)}")
    print("\nBest metrics:")
    for key, best in run.best.items():
        if best.get("value") is None:
            print(f"  {key} ({run.basis_dict[key]}): no finite value")
        else:
            print(f"  {key} ({run.basis_dict[key]}): {best['value']:.4f} at epoch {best['epoch']}")
    for cb in train_infer.callbacks:
        lines = cb.demo_report(log_dir) if isinstance(cb, InDemo) else []
        if lines:
            print("\n" + "\n".join(lines))


def run_demo(log_dir: str | os.PathLike[str] = "runs/demo", epochs: int = 8) -> int:
    """Train the digits CNN with every installed callback; return the exit code."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print(
            "cvml demo needs scikit-learn for its bundled digits images: "
            'pip install "cvml-core[demo]"',
            file=sys.stderr,
        )
        return 1
    if not isinstance(epochs, int) or epochs < 1:
        print(f"cvml demo: --epochs must be >= 1. Received: --epochs {epochs}", file=sys.stderr)
        return 2
    from cvml_core.artifacts.storage import is_url, mask
    from cvml_core.train.tf import require_tensorflow

    try:
        tf = require_tensorflow("cvml demo", extra="demo")
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    folder: Path | str = str(log_dir) if is_url(log_dir) else Path(log_dir)
    problem = _prepare_log_dir(folder)
    if problem:
        print(f"cvml demo: {problem}", file=sys.stderr)
        return 2

    from cvml_core.train.resolve import callback_label
    from cvml_core.train.train_infer import TrainInfer

    (x_train, y_train), (x_dev, y_dev) = load_data()
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(
        len(x_train), seed=0, reshuffle_each_iteration=True
    )
    dev = tf.data.Dataset.from_tensor_slices((x_dev, y_dev))
    callbacks = _build_callbacks(folder, epochs)
    names = ", ".join(callback_label(cb) for cb in callbacks) or "none"
    print(
        f"cvml demo: a small CNN on scikit-learn's 8x8 digits ({len(x_train)} train / "
        f"{len(x_dev)} dev images), {epochs} epoch{'s' if epochs > 1 else ''}, "
        f"batch size {BATCH_SIZE}\n"
        f"callbacks: {names}\nlog_dir: {mask(folder)}"
    )
    train_infer = TrainInfer(build_model(), log_dir=folder, basis_dict=BASIS)
    train_infer.train(
        train, dev, BATCH_SIZE, epochs, callbacks=callbacks, show_results=1,
        teams_webhook_url=os.environ.get("CVML_TEAMS_WEBHOOK_URL") or None,
    )
    _report(train_infer, folder)
    return 0
