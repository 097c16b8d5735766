"""A copy of the model that the background worker saves, through Keras' public API only.

The shadow lives in host memory (:func:`cvml_ckpt.state.host_scope`), so it takes none
of the accelerator memory training needs. The training thread copies the live variables
into it, or into a snapshot that waits for it (:mod:`cvml_ckpt.state`); the worker
writes it with the shadow's own ``save`` / ``save_weights``. The shadow is built once per
run, from a ``model.save(folder, zipped=False)`` of the live model reloaded with
``keras.models.load_model``:
whatever Keras restores from a ``.keras`` file (custom registered layers, assets such as
a ``StringLookup`` vocabulary, subclassed models with ``get_config``, mixed precision,
the compiled loss and optimizer) the shadow has, and what it cannot restore a
checkpoint could not restore either. The unzipped folder is written and read a variable
at a time; a ``.keras`` archive would be held whole in memory both ways. On JAX in one
process the shadow is built instead from the live model's config (the worker cannot
read the live model there): the same, less the assets (:func:`has_assets`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from cvml_ckpt.state import copy_into, host_scope, layout, sizes
from cvml_core.keras_compat import keras


def optimizer_built(optimizer: Any) -> bool:
    """Whether ``optimizer`` holds its per-variable state yet: Keras 3 says so (``built``);
    a tf_keras optimizer has only ``iterations`` (and maybe its learning rate) until then."""
    built = getattr(optimizer, "built", None)
    if built is not None:
        return bool(built)
    return len(optimizer.variables) > 2


def state_variables(model: Any, include_optimizer: bool) -> list[Any]:
    """The variables a checkpoint holds: the model's weights, then the optimizer's
    (once it is built: before the first step it has no state to keep)."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if include_optimizer and optimizer is not None and getattr(optimizer, "built", True):
        variables += list(optimizer.variables)
    return variables


def has_assets(keras_file: Path) -> bool:
    """Whether a ``.keras`` archive holds assets (its ``assets/`` folder, e.g. the
    vocabulary of an adapted lookup layer)."""
    with zipfile.ZipFile(keras_file) as archive:
        return any(name.startswith("assets/") for name in archive.namelist())


class ShadowMismatchError(RuntimeError):
    """The reloaded model's variables do not line up with the live model's."""


class Shadow:
    """The reloaded copy of a model, and the order of its variables."""

    def __init__(
        self,
        source: Path,
        include_optimizer: bool,
        live: list[tuple[Any, ...]],
        config: dict[str, Any] | None = None,
    ) -> None:
        """Load ``source`` (a ``model.save`` folder), or build the model from ``config``
        (``keras.saving.serialize_keras_object`` of the live model: no weights, no
        assets; ``source`` then only names it); check its variables line up, in order,
        with ``live`` (the :func:`layout` of the live model's variables).

        Variables are matched by position and shape, not by path: paths differ, e.g.
        under a ``tf.distribute`` strategy."""
        self.source = source
        #: Built from a config: a ``.keras`` file it writes holds assets (e.g. a lookup
        #: layer's vocabulary) of the config, not of the live model (:func:`has_assets`).
        self.from_config = config is not None
        with host_scope():
            if config is None:
                self.model = keras.models.load_model(source, compile=include_optimizer)
            else:
                if not include_optimizer:
                    config = {k: v for k, v in config.items() if k != "compile_config"}
                # compile_from_config builds the optimizer of a built model
                self.model = keras.saving.deserialize_keras_object(config)
        variables = list(self.model.weights)
        optimizer = getattr(self.model, "optimizer", None)
        if len(live) > len(variables) and optimizer is not None:
            variables += list(optimizer.variables)
        mine = layout(variables)
        if [m[1:] for m in mine] != [theirs[1:] for theirs in live]:
            diff = next(
                (i for i, (a, b) in enumerate(zip(mine, live, strict=False)) if a[1:] != b[1:]),
                min(len(mine), len(live)),
            )
            raise ShadowMismatchError(
                "the shadow model (reloaded from model.save, or built from the config) "
                "does not have the live model's "
                f"variables: {len(mine)} vs {len(live)}, first difference at "
                f"#{diff}: {mine[diff:diff + 1]} vs {live[diff:diff + 1]}"
            )
        self.variables = variables
        self._sizes = sizes(mine)  # bytes of each variable, for copy_into's groups
        self._copy_live: Any = None
        self._warm = True

    def prepare(self, live: list[Any]) -> None:
        """Trace, on the worker, the copy of the ``live`` variables into the shadow, so
        that no save on the training thread pays for it: on TensorFlow one
        ``tf.function`` of an ``assign`` of each live variable's value (a per-variable
        eager copy costs about 0.5 ms each: 0.4 s for MobileNetV2's 800 variables).
        TensorFlow's assign copies a value it shares with another variable into the
        target's own buffer: no second buffer is made (a ``DeepCopy`` first made one
        per variable, 2.5 times as slow). Other backends copy eagerly
        (:func:`copy_into`)."""
        if keras.backend.backend() != "tensorflow":
            return
        import tensorflow as tf

        pairs = list(zip(self.variables, live, strict=True))

        def copy() -> None:
            for target, source in pairs:
                target.assign(source.value)

        # autograph=False: a Python loop unrolled at trace time, and no autograph source
        # file left in the temp directory by a killed process
        function = tf.function(copy, autograph=False)
        function.get_concrete_function()
        self._copy_live = function
        self._warm = False

    def warm_up(self) -> None:
        """Run the traced copy once, on the worker after a write of the shadow (its
        first call pays TensorFlow's graph set-up, about 0.5 s on MobileNetV2); the
        values it copies are overwritten by the next snapshot."""
        if self._copy_live is not None and not self._warm:
            self._copy_live()
            self._warm = True

    def copy_live(self, live: list[Any]) -> None:
        """Copy the ``live`` variables (those given to :meth:`prepare`) into the shadow,
        on the training thread, while no write uses the shadow."""
        if self._copy_live is not None:
            self._copy_live()
        else:
            copy_into(self.variables, [v.value for v in live], value_sizes=self._sizes)

    def copy_from(self, values: list[Any]) -> None:
        """Give the shadow's variables ``values`` (a snapshot's device or host copies, in
        :func:`state_variables` order), on whichever thread no write uses the shadow."""
        copy_into(self.variables, values, owned=True, value_sizes=self._sizes)

    @property
    def includes_optimizer(self) -> bool:
        return getattr(self.model, "optimizer", None) is not None
