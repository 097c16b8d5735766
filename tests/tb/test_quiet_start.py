"""``cvml demo`` starts quietly: TensorFlow's start-up lines are hidden unless asked for.

(Here beside the tb tests, whose ``cvml demo`` output it is about; the function lives in
``cvml_core/cli.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys

CODE = (
    "import sys\n"
    "from cvml_core.train.quiet import quiet_tensorflow_start\n"
    "quiet_tensorflow_start(verbose=sys.argv[1] == 'verbose')\n"
    "import os; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), flush=True)\n"
    "import tensorflow as tf\n"
    "tf.constant(1.0) + 1.0\n"
)


def _run(mode, **env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", CODE, mode], capture_output=True, text=True, check=True,
        env={**clean, **env},
    )


def test_tensorflow_starts_without_its_log_lines():
    quiet = _run("quiet")
    assert quiet.stderr == "" and quiet.stdout.strip() == "2"


def test_the_users_setting_and_verbose_are_left_alone():
    assert _run("quiet", TF_CPP_MIN_LOG_LEVEL="0").stdout.strip() == "0"
    assert _run("verbose").stdout.strip() == "None"
