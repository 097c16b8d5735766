"""One worker of the 2-worker tf_keras test: ``python tf_keras_worker.py <i> <ports> <dir>``.

``TF_USE_LEGACY_KERAS=1`` and ``MultiWorkerMirroredStrategy`` on 127.0.0.1 (``ports``:
two comma-separated free ports), with the workload of ``workload.py``; then crashes a
run that backs up every 2 steps and resumes it; prints its report line.
"""

import json
import os
import sys

index, ports, log_dir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
    "task": {"type": "worker", "index": index},
})

import tensorflow as tf  # noqa: E402
import workload  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x, y = workload.data()
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
dev = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16).with_options(options)
with strategy.scope():
    net = workload.model()
result = workload.fit(net, log_dir, x, y, train, dev)
# Then a run that backs up every 2 steps crashes in every worker and is resumed. No
# barrier: tf_keras' backup is collective (each worker saves; the chief's is the one
# kept), so both workers have finished it when they raise. (tf_keras' backups need a
# local log_dir: none with log_dir on S3.)
if "://" not in log_dir:
    result["backup"] = workload.crash_and_resume(
        log_dir, (x[index::2], y[index::2]), lambda: None, strategy.scope
    )
workload.report(index, result)
