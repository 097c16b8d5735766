"""Custom layers for the cvml-tflite tests, importable by the conversion worker too."""

import os
import sys

import keras


def in_conversion_worker() -> bool:
    return sys.argv[0].endswith(os.path.join("cvml_tflite", "worker_main.py"))


@keras.saving.register_keras_serializable(package="cvml_tflite_tests")
class Erfinv(keras.layers.Layer):
    """``erfinv``: TFLite has no builtin op for it, so conversion must fail."""

    def call(self, x):
        return keras.ops.erfinv(x)


@keras.saving.register_keras_serializable(package="cvml_tflite_tests")
class CrashInWorker(keras.layers.Layer):
    """An identity layer that kills the conversion worker when rebuilt there."""

    def build(self, input_shape):
        if in_conversion_worker():
            os._exit(3)

    def call(self, x):
        return x


@keras.saving.register_keras_serializable(package="cvml_tflite_tests")
class FailInWorker(keras.layers.Layer):
    """An identity layer whose rebuild in the conversion worker fails while ``fail`` is set
    (the flag is in its config, so each snapshot carries the value it had)."""

    def __init__(self, fail=False, **kwargs):
        super().__init__(**kwargs)
        if fail and in_conversion_worker():
            raise ValueError("FailInWorker was asked to fail in the conversion worker")
        self.fail = fail

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "fail": self.fail}
