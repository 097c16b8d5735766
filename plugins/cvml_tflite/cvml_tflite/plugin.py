"""Registers the ``tflite`` callback; imports nothing heavy."""

import cvml_core


@cvml_core.hookimpl
def cvml_register_callbacks(register):
    register(
        "tflite",
        "cvml_tflite.callback:TFLiteCallback",
        summary="Converts the model to a verified .tflite file when the basis improves",
    )
