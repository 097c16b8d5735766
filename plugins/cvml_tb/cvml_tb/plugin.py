"""Registers the ``tb`` callback; imports nothing heavy."""

import cvml_core


@cvml_core.hookimpl
def cvml_register_callbacks(register):
    register(
        "tb",
        "cvml_tb.callback:TensorboardCallback",
        summary="TensorBoard scalars, best-so-far values and sample images with predictions",
    )
