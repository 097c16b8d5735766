"""Which process is the chief, the one that writes (files, manifests, events, posts):
under ``tf.distribute`` the task of type ``chief``, else worker 0 (from the model's
strategy, or ``TF_CONFIG`` before a model is known); on JAX multi-process, process 0 (as
Keras' ``OrbaxCheckpoint``); else the single process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any


def _tf_config(environ: Mapping[str, str]) -> tuple[str | None, int, dict[str, Any]]:
    raw = environ.get("TF_CONFIG", "")
    if not raw.strip():
        return None, 0, {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}. Received: {raw[:200]!r}") from exc
    task = config.get("task") or {}
    return task.get("type"), int(task.get("index", 0)), dict(config.get("cluster") or {})


def _jax_process() -> tuple[int, int]:
    """``(process_index, process_count)`` of a JAX run, ``(0, 1)`` otherwise."""
    jax, keras = sys.modules.get("jax"), sys.modules.get("keras")
    if jax is None or keras is None or keras.backend.backend() != "jax":
        return 0, 1
    return int(jax.process_index()), int(jax.process_count())


def _cluster(model: Any, environ: Mapping[str, str] | None) -> tuple[str | None, int, dict]:
    """``(task_type, task_id, jobs)`` from the model's strategy, else ``TF_CONFIG``."""
    strategy = getattr(model, "distribute_strategy", None)
    resolver: Any = getattr(strategy, "cluster_resolver", None)
    if getattr(resolver, "task_type", None):
        return resolver.task_type, int(resolver.task_id), resolver.cluster_spec().as_dict()
    return _tf_config(os.environ if environ is None else environ)


def is_chief(model: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes files (see the module docstring)."""
    task_type, task_id, jobs = _cluster(model, environ)
    if task_type:  # the chief task, or worker 0 of a cluster without one
        return task_type == "chief" or (
            task_type == "worker" and int(task_id) == 0 and "chief" not in jobs
        )
    return _jax_process()[0] == 0


def process_count(model: Any = None, environ: Mapping[str, str] | None = None) -> int:
    """How many processes train together (1 when not distributed across processes)."""
    task_type, _, jobs = _cluster(model, environ)
    if task_type:
        return sum(len(tasks) for tasks in jobs.values())
    return _jax_process()[1]
