"""TensorFlow for ``TrainInfer`` and the demo (``tf.data``), imported on first use.

cvml-core does not depend on TensorFlow: the core, ``ckpt`` and ``tb`` run on any
Keras 3 backend. Only ``TrainInfer`` and ``cvml demo`` need it; they get it here, and
without it they raise an ImportError that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

INSTALL_HINT = 'pip install "cvml-core[{extra}]"'


def require_tensorflow(what: str = "TrainInfer", extra: str = "train") -> ModuleType:
    """The ``tensorflow`` module, or an ImportError naming ``cvml-core[<extra>]``."""
    try:
        return importlib.import_module("tensorflow")
    except ImportError as exc:
        raise ImportError(
            f"{what} needs TensorFlow (for tf.data), which is not installed: "
            f"{INSTALL_HINT.format(extra=extra)} (the core, ckpt and tb callbacks work "
            "without it)"
        ) from exc


class _LazyTensorFlow:
    """``tf`` for the modules of this package: TensorFlow imported on first attribute use,
    so that importing them (``from cvml_core import TrainInfer``) needs no TensorFlow."""

    def __getattr__(self, name: str) -> Any:
        return getattr(require_tensorflow(), name)


tf: Any = _LazyTensorFlow()
