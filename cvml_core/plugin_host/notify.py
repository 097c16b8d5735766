"""Notify destinations (where notifier plugins post, ``RunInfo.notify``), checked before
epoch 1 by the plugins that own them; the core knows no notifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvml_core.plugin_host.loader import PluginError, Registry, get_registry
from cvml_core.plugin_host.run_info import mask_url


class MissingNotifierError(PluginError):
    """A run names a notify destination that no loaded plugin checks and posts to."""


def _is_off(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_notify(
    destinations: Mapping[str, Any],
    arguments: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """The destinations (name -> value) not turned off (None, blank), as their plugins
    checked them (none did: :class:`MissingNotifierError`, naming ``arguments[name]``)."""
    arguments = arguments or {}
    pending = {name: value for name, value in destinations.items() if not _is_off(value)}
    if not pending:
        return {}
    registry = get_registry() if registry is None else registry
    checked: dict[str, Any] = {}
    for answer in registry.pm.hook.cvml_validate_notify(destinations=dict(pending)):
        if answer is None:
            continue
        if not isinstance(answer, Mapping):
            raise PluginError(
                "a cvml_validate_notify hook must return a dict (destination -> checked "
                f"value) or None. Received: {type(answer).__name__}"
            )
        checked.update({k: v for k, v in answer.items() if k in pending})
    for name, value in pending.items():
        if name not in checked:
            argument = arguments.get(name, f"notify[{name!r}]")
            shown = mask_url(value) if isinstance(value, str) else type(value).__name__
            raise MissingNotifierError(
                f"{argument}={shown!r} needs the {name!r} notifier plugin, which is not "
                f"installed or not loaded (CVML_PLUGINS, CVML_DISABLE_PLUGIN_AUTOLOAD): "
                f"pip install cvml-{name}"
            )
    return {name: value for name, value in checked.items() if not _is_off(value)}
