"""One process of the 2-process JAX test: ``python jax_process.py <id> <port> <log_dir>``.

Trains with ``keras.distribution.DataParallel`` across the processes (one CPU device
each, coordinator on 127.0.0.1), with the workload of ``workload.py``, and prints its
report line; then crashes a run that backs up every 2 steps and resumes it.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

process_id, port, log_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
keras.distribution.initialize(
    job_addresses=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
)
import jax  # noqa: E402
import workload  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
)
x, y = workload.data()
# Each process feeds its own half (auto_shard_dataset=False): one global batch of 16.
result = workload.fit(
    workload.model(), log_dir, x, y,
    train=(x[process_id::2], y[process_id::2]),
    dev=(x[:32][process_id::2], y[:32][process_id::2]),
)
# Then a run that backs up every 2 steps crashes in every process and is resumed.
result["backup"] = workload.crash_and_resume(
    log_dir, (x[process_id::2], y[process_id::2]),
    lambda: multihost_utils.sync_global_devices("cvml backup written"),
)
workload.report(jax.process_index(), result)
