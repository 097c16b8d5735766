"""A quiet TensorFlow start for ``cvml demo``: its native start-up noise kept off stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

#: What quiets TensorFlow's own logging, unless the user set it (or passes --verbose):
#: 2 keeps its C++ errors, drops its info and warning lines.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@contextlib.contextmanager
def _stderr_captured() -> Iterator[IO[bytes]]:
    """Send file descriptor 2 (where native libraries log) to a temporary file meanwhile."""
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_start(verbose: bool = False) -> None:
    """Import TensorFlow without its start-up noise; call it before anything imports it.

    TensorFlow's native libraries log to stderr while they load (oneDNN, CUDA drivers
    not found, CPU instructions, cuInit), some before ``TF_CPP_MIN_LOG_LEVEL`` is
    honoured. Unless ``verbose``, or the user set ``TF_CPP_MIN_LOG_LEVEL`` (their choice
    stands), this sets :data:`QUIET_ENV`, imports TensorFlow and lists its devices with
    stderr sent to a temporary file (shown if the import fails), and turns absl's
    Python logging down to errors.
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ.update(QUIET_ENV)
    error: BaseException | None = None
    noise = ""
    with _stderr_captured() as captured:
        try:
            from cvml_core.train.tf import require_tensorflow

            tf = require_tensorflow("cvml demo", extra="demo")
            tf.config.list_physical_devices()  # the CUDA probe logs here
        except BaseException as exc:  # shown with what TensorFlow logged, then raised
            error = exc
            captured.seek(0)
            noise = captured.read().decode(errors="replace")
    if error is not None:
        sys.stderr.write(noise)
        raise error
    with contextlib.suppress(ImportError):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
