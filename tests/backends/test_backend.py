"""The tests of this folder run on the backend their session asked for.

``nox -s backends`` runs the folder with ``KERAS_BACKEND=jax``, ``KERAS_BACKEND=torch``
and ``TF_USE_LEGACY_KERAS=1``; the other sessions on TensorFlow. Without this check a
session whose setting was lost would run everything on TensorFlow and pass.
"""

from __future__ import annotations

import os

from cvml_core.keras_compat import keras, uses_legacy_keras

#: The top-level package of each backend's tensors.
TENSOR_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def test_keras_runs_on_the_backend_the_session_asked_for():
    legacy = uses_legacy_keras()
    asked = "tensorflow" if legacy else os.environ.get("KERAS_BACKEND", "tensorflow")
    assert keras.__name__ == ("tf_keras" if legacy else "keras")
    assert keras.backend.backend() == asked
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    variable = model.weights[0]
    tensor = variable if legacy else variable.value  # the framework's own tensor
    package = type(tensor).__module__.split(".")[0]
    assert package in TENSOR_PACKAGES[asked], (asked, type(tensor))
    print(f"backend: {asked} ({keras.__name__} {keras.__version__}, tensors: {package})")
