"""Copying a list of Keras variables to host memory and back, in one pass per dtype.

Reading 580 variables one by one (``v.numpy()``) costs a backend call each; here the
variables of one dtype are flattened and concatenated by one compiled function
(``tf.function`` on TensorFlow, ``jax.jit`` on JAX, eager ``keras.ops`` elsewhere), so a
snapshot is one host copy per dtype; writing it into another model's variables (the
shadow) is one ``assign`` per variable. Public API only: ``keras.ops``,
``keras.backend.backend()``, ``Variable.value`` / ``assign`` / ``numpy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cvml_core.keras_compat import keras


@dataclass(frozen=True)
class _Slot:
    index: int  # position in the variable list
    start: int  # offset in the flat array of its dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def layout(variables: list[Any]) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, shape, dtype)`` of each variable."""
    return [
        (str(getattr(v, "path", v.name)), tuple(int(d) for d in v.shape), str(v.dtype))
        for v in variables
    ]


def _groups(variables: list[Any]) -> dict[str, list[_Slot]]:
    groups: dict[str, list[_Slot]] = {}
    offsets: dict[str, int] = {}
    for index, (_, shape, dtype) in enumerate(layout(variables)):
        slot = _Slot(index, offsets.get(dtype, 0), shape)
        groups.setdefault(dtype, []).append(slot)
        offsets[dtype] = slot.start + slot.size
    return groups


def _flatten(values: list[Any]) -> Any:
    ops = keras.ops
    return ops.concatenate([ops.reshape(v, (-1,)) for v in values], axis=0)


def _compile_reader(variables: list[Any]) -> Callable[[], Any]:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # autograph=False: no Python control flow to convert, and no autograph source
        # file left in the temp directory by a killed process
        return tf.function(lambda: _flatten(variables), autograph=False)
    if backend == "jax":
        import jax

        jitted = jax.jit(lambda *values: _flatten(list(values)))
        return lambda: jitted(*[v.value for v in variables])
    return lambda: _flatten(variables)


def compile_copy(targets: list[Any], sources: list[Any]) -> Callable[[], None]:
    """A function that copies each of ``sources`` into its ``targets`` variable at once.

    A real copy (the sources are updated in place by the next training step): on
    TensorFlow ``tf.raw_ops.DeepCopy`` in one ``tf.function``, on JAX one jitted
    ``jnp.copy`` of all values; elsewhere ``assign`` per variable (torch copies).
    """
    pairs = list(zip(targets, sources, strict=True))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def copy_tf() -> None:
            for target, source in pairs:
                target.assign(tf.raw_ops.DeepCopy(x=source.value))

        return tf.function(copy_tf, autograph=False)  # a loop over a Python list
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        copies = jax.jit(lambda *values: [jnp.copy(v) for v in values])

        def copy_jax() -> None:
            for target, value in zip(targets, copies(*[s.value for s in sources]), strict=True):
                target.assign(value)

        return copy_jax

    def copy_each() -> None:
        for target, source in pairs:
            target.assign(source)

    return copy_each


def _to_host(value: Any) -> np.ndarray:
    array = keras.ops.convert_to_numpy(value)
    if array.base is not None and not isinstance(array.base, np.ndarray):
        # A view of backend memory (a torch tensor, a JAX buffer) may change: copy it.
        array = array.copy()
    return array


class StateCopy:
    """Reads ``variables`` into flat numpy arrays (one per dtype) and writes them back.

    :meth:`read` on the training thread returns ``{dtype: flat array}``;
    :meth:`split` gives per-variable views of it; :meth:`assign` writes such a snapshot
    into ``variables`` (the other model's, of the same layout).
    """

    def __init__(self, variables: list[Any]) -> None:
        self.variables = list(variables)
        self.layout = layout(self.variables)
        self.groups = _groups(self.variables)
        self._readers: dict[str, Callable[[], Any]] = {}

    def read(self) -> dict[str, np.ndarray]:
        """A host copy of every variable, one flat array per dtype."""
        flats = {}
        for dtype, slots in self.groups.items():
            if len(slots) == 1:
                flats[dtype] = _to_host(self.variables[slots[0].index]).reshape(-1)
                continue
            if dtype not in self._readers:
                self._readers[dtype] = _compile_reader(
                    [self.variables[s.index] for s in slots]
                )
            flats[dtype] = _to_host(self._readers[dtype]())
        return flats

    def split(self, flats: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Per-variable views of a :meth:`read` snapshot, in variable order."""
        values: list[Any] = [None] * len(self.variables)
        for dtype, slots in self.groups.items():
            for slot in slots:
                values[slot.index] = flats[dtype][slot.start : slot.start + slot.size].reshape(
                    slot.shape
                )
        return values

    def assign(self, flats: dict[str, np.ndarray]) -> None:
        """Give ``variables`` the values of a :meth:`read` snapshot (same layout).

        One ``assign`` per variable: a compiled assignment of the flat arrays was not
        faster enough to pay for the extra copy of the model it kept alive (measured
        on MobileNetV2: +50 MB resident)."""
        for variable, value in zip(self.variables, self.split(flats), strict=True):
            variable.assign(value)
