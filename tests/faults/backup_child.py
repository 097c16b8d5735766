"""The training processes the backup kill trials stop: ckpt with a backup every few steps.

``python backup_child.py`` imports Keras once and then, for each line ``LOG_DIR
KILL_AT RUNNER`` read from stdin, forks a child that trains the model of
``backup_workload.build`` (as ``backup_workload.fit`` with that runner does) and
SIGKILLs itself at the end of training step ``KILL_AT`` (the optimizer's iteration
count); it prints ``killed <status>`` when the child is gone. (Forking saves the 5 s
TensorFlow import per trial: nothing of TensorFlow runs before the fork.) Each batch end
of a child prints ``step <iterations> busy <0|1>``: whether a backup write was still in
flight (a backup due then is deferred).
"""

import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from backup_workload import BASIS, EPOCHS, INTERVAL, build, data, fit  # noqa: E402
from cvml_ckpt import CkptCallback  # noqa: E402

from cvml_core.keras_compat import keras  # noqa: E402


def train(log_dir: str, kill_at: int, runner: str) -> None:
    model = build()
    cb = CkptCallback(log_dir, BASIS, backup_every_steps=INTERVAL)

    def batch_end(batch, logs):
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        print(f"step {step} busy {int(cb.worker.busy)}", flush=True)
        if step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)  # a training step longer than this tiny model's

    fit(model, data(), EPOCHS,
        [cb, keras.callbacks.LambdaCallback(on_train_batch_end=batch_end)], runner=runner)


print("ready", flush=True)
for line in sys.stdin:
    log_dir, kill_at, runner = line.split()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            train(log_dir, int(kill_at), runner)
        finally:
            os._exit(3)  # the kill never came
    _, status = os.waitpid(pid, 0)
    print(f"killed {os.waitstatus_to_exitcode(status)}", flush=True)
