"""The hooks a cvml plugin (a module named by an entry point in group ``cvml``, importing
``hookimpl`` from ``cvml_core``, never pluggy) may implement, with the same argument names
or fewer. Each but ``cvml_validate_notify`` (a check: its errors stop the run) is called
on each plugin on its own (:func:`~cvml_core.plugin_host.loader.call_hook`): one that
raises is reported naming its distribution and the others still run."""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "cvml"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cvml_register_callbacks(register: Any) -> None:
    """Register this plugin's callbacks. Called once per plugin when plugins are loaded
    (the first ``available_callbacks()``, ``create_callback()`` or ``cvml plugins``); the
    return value is ignored.

    :param register: ``register(name, target, summary="")``: ``name`` is what users type
        (lowercase letters, digits, ``-``, ``_``), ``target`` ``"module:ClassName"``
        (imported when the callback is created) or the class, ``summary`` one line for
        ``cvml plugins`` (docs/plugin-authors.md: what is reported when one is bad).
    """


@hookspec
def cvml_artifact_saved(artifact: Any) -> None:
    """A callback's file (a checkpoint, a ``.tflite`` file ...) is complete under its
    final name. Called on the training thread at the next epoch end or at train end; the
    return value is ignored.

    :param artifact: a :class:`cvml_core.artifacts.artifact.Artifact` (``kind``, ``path``,
        1-based ``epoch``, ``metrics``, ``basis_key`` or None, ``callback``, ``details``).
        A plugin that raises never removes the artifact.
    """


@hookspec
def cvml_validate_notify(destinations: Any) -> Any:
    """Check the notify destinations this plugin owns. Called by ``TrainInfer.train``
    (:func:`~cvml_core.plugin_host.notify.check_notify`) before any callback is built,
    when the run names a destination (``teams_webhook_url=url`` gives ``{"teams": url}``).

    :param destinations: a dict, destination name -> the value the user passed.

    Return ``{name: checked value}`` (None turns it off) for the destinations this plugin
    owns, or None; they become ``run.notify``. Raise a ``ValueError`` naming the argument
    on a bad value: no epoch runs.
    """


@hookspec
def cvml_train_begin(run: Any) -> None:
    """A ``TrainInfer.train`` run starts. Called once, before epoch 1, on the training
    thread; the return value is ignored.

    :param run: its :class:`cvml_core.plugin_host.run_info.RunInfo` (``log_dir``,
        ``epochs``, ``basis_dict``, callback names, ``notify`` ...).
    """


@hookspec
def cvml_train_end(run: Any, logs: Any, error: Any) -> None:
    """A ``TrainInfer.train`` run ended, normally or not. Called once, after every
    callback's background work finished; the return value is ignored.

    :param run: the ``RunInfo`` of ``cvml_train_begin``, now with ``end_time``, the best
        value per basis key and the artifacts written.
    :param logs: the last epoch's logs (a dict, possibly empty).
    :param error: the exception that stopped training (re-raised after the hook), or None.
    """
