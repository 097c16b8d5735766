"""The hooks a cvml plugin may implement.

A plugin is a module named by an entry point in the group ``cvml``. It imports
``hookimpl`` from ``cvml_core`` (never pluggy itself) and implements any of the
hooks below with the same argument names; it may leave arguments out. (A package that
only adds a callback needs no hook: an entry point in ``cvml.callbacks`` is enough, see
:mod:`cvml_core.plugin_host.loader`.)

Every hook here is called through :func:`cvml_core.plugin_host.loader.call_hook`, which calls
each plugin on its own: a plugin that raises is reported as a warning naming its
distribution (an error with ``CVML_STRICT_PLUGINS=1``) and the other plugins are
still called. No hook's return value is used.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "cvml"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cvml_register_callbacks(register: Any) -> None:
    """Register the callbacks this plugin provides.

    Called once per plugin, when plugins are loaded (the first call to
    ``available_callbacks()``, ``create_callback()`` or ``cvml plugins``).

    :param register: ``register(name, target, summary="")``. ``name`` is what users
        type (lowercase letters, digits, ``-`` and ``_``). ``target`` is either
        ``"module:ClassName"``, imported only when the callback is created, or the
        class itself. ``summary`` is one line shown by ``cvml plugins``. A bad or
        taken name, or a target whose module does not exist, is reported as a load
        error of this plugin; a class missing from its module is an error when the
        callback is created. A class that sets no ``name`` gets the registered one.

    The return value is ignored.
    """


@hookspec
def cvml_artifact_saved(artifact: Any) -> None:
    """React to a file a callback has written (a checkpoint, a ``.tflite`` file ...).

    Called on the training thread after the file is complete under its final name,
    at the next epoch end or at train end (also for files written on the training
    thread: announcements are made at those two points only).

    :param artifact: a :class:`cvml_core.artifacts.artifact.Artifact` with ``kind``, ``path``,
        ``epoch`` (1-based), ``metrics``, ``basis_key`` (or None), ``callback`` (the
        callback's registered name) and ``details`` (kind-specific figures).

    The return value is ignored. A plugin that raises never removes the artifact.
    """


@hookspec
def cvml_train_begin(run: Any) -> None:
    """A ``TrainInfer.train`` run is starting.

    Called once, before the first epoch, on the training thread.

    :param run: a :class:`cvml_core.plugin_host.run_info.RunInfo` describing the run (``log_dir``,
        ``epochs``, ``start_epoch``, ``basis_dict``, callback names, start time and ``notify``,
        where notifiers post, e.g. ``{"teams": url}``).

    The return value is ignored.
    """


@hookspec
def cvml_train_end(run: Any, logs: Any, error: Any) -> None:
    """A ``TrainInfer.train`` run has ended, normally or not.

    Called once, after every callback's background work has finished.

    :param run: the same :class:`~cvml_core.plugin_host.run_info.RunInfo` given to
        ``cvml_train_begin``,
        now with ``end_time``, the best value per basis key and the artifacts written.
    :param logs: the last epoch's logs (a dict, possibly empty).
    :param error: the exception that stopped training, or None when it finished.
        After the hook, the exception is re-raised to the caller.

    The return value is ignored.
    """
