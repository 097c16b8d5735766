"""cvml-tb: the ``tb`` callback, TensorBoard scalars, best-so-far values and sample images.

``from cvml_tb import TensorboardCallback`` imports Keras (never TensorFlow: events are
written by TensorBoard's own writer); importing this package imports neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvml_tb.callback import TensorboardCallback, TensorboardStepWarning

__all__ = ["TensorboardCallback", "TensorboardStepWarning"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cvml_tb import callback

        value = getattr(callback, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cvml_tb' has no attribute {name!r}")
