"""``TrainInfer`` and ``cvml demo``: the training wrapper, the only part of the core that
needs TensorFlow (for ``tf.data``). ``TrainInfer`` is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvml_core.train.train_infer import TrainInfer

__all__ = ["TrainInfer"]


def __getattr__(name: str) -> Any:
    if name == "TrainInfer":
        from cvml_core.train.train_infer import TrainInfer

        return TrainInfer
    raise AttributeError(f"module 'cvml_core.train' has no attribute {name!r}")
