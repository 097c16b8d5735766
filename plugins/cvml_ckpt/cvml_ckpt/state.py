"""Where a snapshot of the model's variables is kept: a device copy, or host memory.

A snapshot is taken on the training thread and must not change when the next step
updates the variables. Two places hold it:

* a **device copy** (``keras.ops.copy`` of each variable, on the variable's device): the
  quickest to take on an accelerator, but it takes accelerator memory, so it is used
  only where the device has room (:func:`has_room`) and at most one exists at a time;
* **host memory**: the variables are copied to the host, a bounded group at a time
  (:func:`copy_into`), straight into the shadow model's host variables when no write
  uses it, else into host arrays that wait for it (numpy; on JAX, JAX arrays on the
  host device, which a shadow variable keeps without a second copy).

No function here is compiled (``tf.function``, ``jax.jit``): the first saves of a run
pay no tracing. Public API only: ``keras.ops``, ``keras.device``, ``Variable.value`` /
``assign``, and each framework's own memory counters.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cvml_core.artifacts.worker import release_free_heap
from cvml_core.keras_compat import keras

#: ``() -> (free_bytes, total_bytes)`` of the device the variables live on, or None
#: when they live in host memory (a CPU) or the framework cannot tell.
MemoryQuery = Callable[[], "tuple[int, int] | None"]

#: host bytes copied per group (:func:`copy_into`), at most; and at most this share
#: of the state: the transient beyond the shadow (one variable at least).
GROUP_BYTES = 32 * 2**20
GROUP_SHARE = 0.05


def layout(variables: list[Any]) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, shape, dtype)`` of each variable."""
    return [
        (str(getattr(v, "path", v.name)), tuple(int(d) for d in v.shape), str(v.dtype))
        for v in variables
    ]


def nbytes(variables: list[Any]) -> int:
    """The bytes of the variables' values (one copy of the state)."""
    return sum(sizes(layout(variables)))


def sizes(entries: list[tuple[str, tuple[int, ...], str]]) -> list[int]:
    """The bytes of each variable of a :func:`layout`."""
    return [
        int(np.prod(shape, dtype=np.int64)) * np.dtype(_np_dtype(dtype)).itemsize
        for _, shape, dtype in entries
    ]


def _np_dtype(dtype: str) -> Any:
    try:
        return np.dtype(dtype)
    except TypeError:  # bfloat16 and other ml_dtypes
        import ml_dtypes

        return getattr(ml_dtypes, dtype)


def _on_accelerator(value: Any) -> bool:
    backend = keras.backend.backend()
    if backend == "jax":
        return any(d.platform != "cpu" for d in value.devices())
    if backend == "torch":
        return bool(value.device.type != "cpu")
    if backend == "tensorflow":
        return "CPU" not in str(getattr(value, "device", "CPU")).upper()
    return False


def device_memory(variables: list[Any]) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the device that holds ``variables[0]``, from the
    framework's own counters; None for host memory or when the framework cannot tell
    (TensorFlow reports no limit: a snapshot there stages to host unless forced).

    JAX: ``Device.memory_stats()`` (``bytes_limit - bytes_in_use``); torch:
    ``torch.cuda.mem_get_info`` plus the memory its caching allocator holds unused.
    """
    if not variables or not _on_accelerator(variables[0].value):
        return None
    value = variables[0].value
    backend = keras.backend.backend()
    if backend == "jax":
        (device,) = list(value.devices())[:1]
        stats = device.memory_stats() or {}
        if "bytes_limit" not in stats:
            return None
        limit = int(stats["bytes_limit"])
        return limit - int(stats.get("bytes_in_use", 0)), limit
    if backend == "torch":
        import torch

        free, total = torch.cuda.mem_get_info(value.device)
        cached = torch.cuda.memory_reserved(value.device) - torch.cuda.memory_allocated(
            value.device
        )
        return int(free + cached), int(total)
    return None


def has_room(need: int, memory: tuple[int, int] | None) -> bool:
    """Whether a device with ``memory = (free, total)`` has room for ``need`` more
    bytes with margin: what stays free afterwards is at least ``need`` again and at
    least a tenth of the device (training's own peaks: activations, the allocator)."""
    if memory is None:
        return False
    free, total = memory
    return free - need >= max(need, total // 10)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a framework's out-of-memory error (JAX ``RESOURCE_EXHAUSTED``,
    ``torch.OutOfMemoryError``, TensorFlow ``ResourceExhaustedError``)."""
    text = f"{type(error).__name__} {error}".lower()
    return any(
        mark in text
        for mark in ("out of memory", "outofmemory", "resource_exhausted", "resourceexhausted")
    )


def device_copies(variables: list[Any]) -> list[Any]:
    """A device copy of each variable (on its own device), unchanged by later steps.

    On an out-of-memory error the copies made so far are dropped before it is raised."""
    copies: list[Any] = []
    try:
        if keras.backend.backend() == "jax":
            import jax

            # One batched copy on each array's own device; no compiled function.
            copies = list(jax.device_put([v.value for v in variables], may_alias=False))
        else:
            for v in variables:
                copies.append(keras.ops.copy(v.value))
    except BaseException:
        copies.clear()
        gc.collect()
        raise
    return copies


def host_copies(values: list[Any], own: bool = True) -> list[Any]:
    """A host copy of each value, never a view of memory that changes: JAX arrays on the
    host device (one batched copy, :func:`_jax_to_host`), else numpy arrays (with
    ``own=False`` a view may be returned, for a caller that copies it at once)."""
    if keras.backend.backend() == "jax":
        return _jax_to_host(values, copy=True)
    arrays = []
    for value in values:
        array = keras.ops.convert_to_numpy(value)
        if own and (array.base is not None or not array.flags.owndata):
            array = array.copy()  # a view of backend memory (a torch buffer)
        arrays.append(array)
    return arrays


def _jax_to_host(values: list[Any], copy: bool) -> list[Any]:
    """JAX arrays on the host device (:func:`_host_device`), one batched ``device_put``:
    new buffers with ``copy`` (a live variable's buffer is donated to the next step),
    else ``values`` themselves where they are there already (copies the caller owns).
    A JAX array is immutable: a shadow variable assigned one keeps it, no second copy."""
    import jax

    if not all(getattr(v, "is_fully_addressable", True) for v in values):
        # across processes: this process' replica, as numpy (the caller owns it)
        return [np.array(a) for a in jax.device_get(list(values))]
    try:
        host = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS leaves the CPU out: the default device
        host = None
    return list(jax.device_put(list(values), host, may_alias=False if copy else None))


def _groups(sizes: list[int], limit: int = GROUP_BYTES) -> Iterator[list[int]]:
    """Consecutive indices of ``sizes`` (bytes), at most ``limit`` bytes a group (one
    index at least)."""
    group: list[int] = []
    size = 0
    for index, n in enumerate(sizes):
        if group and size + n > limit:
            yield group
            group, size = [], 0
        group.append(index)
        size += n
    if group:
        yield group


def _value_bytes(value: Any) -> int:
    """The bytes of one value: its own ``nbytes`` (numpy, JAX, torch), else from its
    shape and dtype (a TensorFlow tensor)."""
    n = getattr(value, "nbytes", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    return int(np.prod(value.shape, dtype=np.int64)) * _itemsize(value)


def _itemsize(value: Any) -> int:
    dtype = getattr(value, "dtype", None)
    try:
        return int(np.dtype(_np_dtype(keras.backend.standardize_dtype(dtype))).itemsize)
    except (TypeError, ValueError, AttributeError):
        return 4


def copy_into(
    targets: list[Any], values: list[Any], owned: bool = False,
    value_sizes: list[int] | None = None,
) -> None:
    """Give each of ``targets`` (host variables) the value in ``values`` (device copies,
    live variables' values or host copies), a group of at most :data:`GROUP_BYTES`
    and :data:`GROUP_SHARE` of the state at a time (one variable at least), so that
    host memory grows by one group beyond the targets. ``owned``: the values are
    copies nobody else changes; on JAX the targets then keep them (no copy).
    ``value_sizes``: the values' bytes, if known (:func:`sizes`)."""
    if len(targets) != len(values):
        raise ValueError(f"{len(values)} values for {len(targets)} variables")
    if keras.backend.backend() == "torch":
        _torch_copy_into(targets, values)
        return
    jax_backend = keras.backend.backend() == "jax"
    if value_sizes is None:
        value_sizes = [_value_bytes(v) for v in values]
    limit = min(GROUP_BYTES, int(sum(value_sizes) * GROUP_SHARE))
    with host_scope():
        for group in _groups(value_sizes, limit):
            picked = [values[i] for i in group]
            if jax_backend:  # the targets keep these immutable arrays
                arrays = _jax_to_host(picked, copy=not owned)
            else:  # assign copies at once on TensorFlow
                arrays = host_copies(picked, own=False)
            for i, array in zip(group, arrays, strict=True):
                targets[i].assign(array)
            del arrays, picked


def _torch_copy_into(targets: list[Any], values: list[Any]) -> None:
    """torch: each tensor straight into its target's tensor (``Tensor.copy_``, across
    devices too): one copy, nothing in between; numpy values through ``assign``."""
    import torch

    with torch.no_grad():
        for target, value in zip(targets, values, strict=True):
            if isinstance(value, torch.Tensor):
                target.value.copy_(value)
            else:
                target.assign(value)


def give_back_freed_memory() -> None:
    """Collect garbage (a Keras model holds reference cycles), then return the freed
    heap memory to the operating system (:func:`release_free_heap`)."""
    gc.collect()
    release_free_heap()


def _host_device() -> str | None:
    """Keras' name of the host device where it differs from the default one."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        try:
            jax.devices("cpu")
        except RuntimeError:  # JAX_PLATFORMS leaves the CPU out: keep the default
            return None
        return None if jax.default_backend() == "cpu" else "cpu:0"
    if backend == "torch":
        import torch

        return "cpu" if torch.cuda.is_available() else None
    if backend == "tensorflow":
        return "cpu:0"
    return None


@contextlib.contextmanager
def host_scope() -> Iterator[None]:
    """Variables and values made inside live in host memory (``keras.device``)."""
    device = _host_device()
    if device is None:
        yield
        return
    with keras.device(device):
        yield
