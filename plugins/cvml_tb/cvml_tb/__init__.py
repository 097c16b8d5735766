"""cvml-tb: the ``tb`` callback, TensorBoard scalars, best-so-far values and sample images.

``from cvml_tb import TensorboardCallback`` imports TensorFlow; importing this package
or :mod:`cvml_tb.plugin` does not (``cvml plugins`` lists callbacks without TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvml_tb.callback import TensorboardCallback

__all__ = ["TensorboardCallback"]


def __getattr__(name: str) -> Any:
    if name == "TensorboardCallback":
        from cvml_tb.callback import TensorboardCallback

        globals()[name] = TensorboardCallback
        return TensorboardCallback
    raise AttributeError(f"module 'cvml_tb' has no attribute {name!r}")
