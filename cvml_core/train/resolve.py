"""The callbacks of a run: built from names and dicts, their folders checked."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cvml_core.keras_compat import Callback
from cvml_core.plugin_host.loader import get_registry
from cvml_core.train.protocol import TracksBasis, WritesFolder


def callback_label(callback: Any) -> str:
    """A callback's registered name (``ckpt``) or, for other callbacks, its class name."""
    name = getattr(callback, "name", None)
    if isinstance(name, str) and name and name != "callback":
        return name
    return type(callback).__name__


def _plan_item(index: int, item: Any) -> tuple[Any, type | None, dict[str, Any]]:
    """``(item, None, {})`` for a callback object, else ``(name, class, options)``."""
    if isinstance(item, Callback):
        return item, None, {}
    if isinstance(item, str):
        name, options = item, {}
    elif isinstance(item, Mapping):
        options = dict(item)
        name = options.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"callbacks[{index}] is a dict, so it needs a 'name' key naming an "
                f"installed callback, e.g. {{'name': 'tb', ...options}}. "
                f"Received: callbacks[{index}]={item!r}"
            )
    elif isinstance(item, type):
        raise TypeError(
            f"callbacks[{index}] is the class {item.__name__}, not an instance: write "
            f"{item.__name__}(...). Received: callbacks[{index}]={item.__name__} "
            "(a class)"
        )
    else:
        raise TypeError(
            f"callbacks[{index}] must be a keras Callback, a registered name or a dict "
            f"with 'name'. Received: callbacks[{index}] of type {type(item).__name__}"
        )
    return name, get_registry().callback_class(name), options


def resolve_callbacks(
    callbacks: Any,
    log_dir: Any,
    basis_dict: Mapping[str, str] | None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Build the callbacks list: objects as they are, names and dicts via the registry.

    ``"ckpt"`` builds ``cls(log_dir=log_dir, basis_dict=basis_dict)``; ``{"name": "tb",
    **options}`` adds the options (which may override ``log_dir``/``basis_dict``);
    ``storage_options`` (for a URL ``log_dir``) is passed when given.
    Every name is looked up before any callback is built, so an unknown name raises
    :class:`~cvml_core.plugin_host.loader.UnknownCallbackError` (listing installed names) first.
    A callback that raises while built raises :class:`~cvml_core.plugin_host.loader.PluginError`
    naming it and its distribution, and the folders the callbacks made meanwhile are
    removed if they hold no file. Two callbacks writing one folder raise ``ValueError``.
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, Mapping)) or not isinstance(callbacks, Sequence):
        callbacks = [callbacks]
    plan = [_plan_item(index, item) for index, item in enumerate(callbacks)]
    resolved = []
    folders = {
        os.fspath(d) for _, cls, o in plan
        if cls is not None and isinstance(d := o.get("log_dir", log_dir), (str, os.PathLike))
    }
    with contextlib.ExitStack() as stack:
        for folder in sorted(folders):
            stack.enter_context(new_empty_folders_removed_on_error(folder))
        for item, cls, options in plan:
            if cls is None:
                resolved.append(item)
                continue
            kwargs: dict[str, Any] = {"log_dir": log_dir, "basis_dict": basis_dict}
            if storage_options is not None:
                kwargs["storage_options"] = storage_options
            kwargs.update(options)
            missing = [k for k in ("log_dir", "basis_dict") if kwargs[k] is None]
            if missing:
                raise ValueError(
                    f"callback {item!r} is given by name, so it needs "
                    f"{' and '.join(missing)}: pass them to TrainInfer(model, log_dir=..., "
                    "basis_dict=...), to train(..., log_dir=..., basis_dict=...) or in the "
                    f"callback's dict. Received: {', '.join(f'{k}=None' for k in missing)}"
                )
            resolved.append(get_registry().create(item, **kwargs))
        _check_folders(resolved)
    return resolved


@contextlib.contextmanager
def new_empty_folders_removed_on_error(log_dir: str) -> Iterator[None]:
    """If the body raises, remove the folders it made in local ``log_dir`` (and
    ``log_dir`` itself) that hold no file; a folder holding a file is kept."""
    root = Path(log_dir)
    if "://" in log_dir:  # a store's URL: nothing made here
        yield
        return
    existed = root.is_dir()
    before = set(os.listdir(root)) if existed else set()
    try:
        yield
    except BaseException:
        new = [root / n for n in (os.listdir(root) if root.is_dir() else []) if n not in before]
        for path in [*new, *([] if existed else [root])]:
            if path.is_dir() and not path.is_symlink():
                for folder, _, _ in sorted(os.walk(path), reverse=True):  # deepest first
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)  # only succeeds when empty
        raise


def _check_folders(callbacks: list[Any]) -> None:
    """Two callbacks writing one folder would overwrite each other's manifest."""
    seen: dict[str, Any] = {}
    for cb in callbacks:
        if not isinstance(cb, WritesFolder):
            continue
        store = getattr(cb, "store", None)
        where = str(store) if store is not None else str(cb.folder)
        key = where if store is not None and store.is_remote else os.path.abspath(cb.folder)
        if key in seen:
            raise ValueError(
                f"callbacks {callback_label(seen[key])!r} and {callback_label(cb)!r} both "
                f"write to {where}; give one its own folder, e.g. "
                f"{{'name': {callback_label(cb)!r}, 'folder': '{Path(cb.folder).name}_2'}}"
            )
        seen[key] = cb


def warn_earlier_bests(callbacks: list[Any]) -> None:
    """A new run (start_epoch=0) into a used log_dir keeps that log_dir's bests: say so."""
    for cb in callbacks:
        if not isinstance(cb, TracksBasis):
            continue
        kept = {k: kb for k, kb in cb.policy.best.items() if kb.value is not None}
        if kept:
            described = ", ".join(
                f"{k}={kb.value:.4g} (epoch {kb.epoch})" for k, kb in kept.items()
            )
            where = (getattr(cb, "store", None) or cb.folder) if isinstance(
                cb, WritesFolder) else "its log_dir"
            warnings.warn(
                f"{callback_label(cb)!r}: {where} holds the bests of an earlier run "
                f"({described}); they are kept, so a file is written only when it beats "
                "them. Use a new log_dir to start afresh, or start_epoch to resume.",
                RuntimeWarning,
                stacklevel=3,
            )
