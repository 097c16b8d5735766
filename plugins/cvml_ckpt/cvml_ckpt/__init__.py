"""cvml-ckpt: the ``ckpt`` callback, checkpoints of the best epochs per basis key.

``from cvml_ckpt import CkptCallback`` imports Keras; importing this package or its
``plugin`` module does not (``cvml plugins`` lists callbacks without TensorFlow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cvml_ckpt.callback import CkptCallback

__all__ = ["CkptCallback"]


def __getattr__(name: str) -> Any:
    if name == "CkptCallback":
        from cvml_ckpt.callback import CkptCallback

        return CkptCallback
    raise AttributeError(f"module 'cvml_ckpt' has no attribute {name!r}")
