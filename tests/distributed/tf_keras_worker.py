"""One worker of the 2-worker tf_keras test: ``python tf_keras_worker.py <i> <ports> <dir>``.

``TF_USE_LEGACY_KERAS=1`` and ``MultiWorkerMirroredStrategy`` on 127.0.0.1 (``ports``:
two comma-separated free ports), with the workload of ``workload.py``; prints its
report line.
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
workload.report(index, workload.fit(net, log_dir, x, y, train, dev))
