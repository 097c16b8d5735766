"""Plugin loading from entry point groups ``cvml.callbacks`` (a callback by name, imported
when created) and ``cvml`` (a module implementing hooks); a failure, or a group that looks
like a misspelling of these, is a load error of its distribution (docs/plugin-authors.md).
``CVML_PLUGINS=a,b`` loads only these (entry point or distribution names),
``CVML_DISABLE_PLUGIN_AUTOLOAD=1`` none, ``CVML_STRICT_PLUGINS=1`` raises on a failure."""

from __future__ import annotations

import difflib
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import importlib_metadata
import pluggy

from cvml_core.plugin_host import hookspecs
from cvml_core.plugin_host.registry import (
    CALLBACK_GROUP,
    ENTRY_POINT_GROUP,
    CallbackInfo,
    LoadError,
    PluginError,
    PluginSource,
    Registry,
    UnknownCallbackError,
    registered_name,
)

__all__ = [
    "CallbackInfo", "LoadError", "PluginError", "PluginSource", "Registry",
    "UnknownCallbackError", "available_callbacks", "call_hook", "create_callback",
    "get_registry", "load_registry", "registered_name", "reset_registry",
]


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def installed_plugin_sources(entry_points: Any = None) -> list[PluginSource]:
    """The entry points of both groups, by distribution then name; imports none."""
    if entry_points is None:
        entry_points = importlib_metadata.entry_points()
    sources = []
    for group in (CALLBACK_GROUP, ENTRY_POINT_GROUP):
        for ep in entry_points.select(group=group):
            dist, is_callback = ep.dist, group == CALLBACK_GROUP
            sources.append(
                PluginSource(
                    name=ep.name,
                    distribution=dist.name if dist is not None else "unknown",
                    version=dist.version if dist is not None else "",
                    entry_point=None if is_callback else ep,
                    target=ep.value if is_callback else None,
                    summary=dist.metadata.get("Summary", "") if is_callback and dist else "",
                )
            )
    return sorted(sources, key=lambda s: (s.distribution.lower(), s.name))


def misspelled_groups(entry_points: Any) -> list[tuple[str, str, str, list[str]]]:
    """Entry point groups that look like ``cvml`` or ``cvml.callbacks`` misspelled:
    ``(distribution, group, closest known group, entry point names)``; imports none."""
    known = (CALLBACK_GROUP, ENTRY_POINT_GROUP)
    suspects = {
        group for group in {ep.group for ep in entry_points} - set(known)
        if group.lower().startswith("cvml") or difflib.get_close_matches(group, known, cutoff=0.8)
    }
    found: dict[tuple[str, str], list[str]] = {}
    for ep in entry_points:
        if ep.group in suspects:
            dist = ep.dist.name if ep.dist is not None else "unknown"
            found.setdefault((dist, ep.group), []).append(ep.name)
    result = []
    for (dist, group), names in sorted(found.items()):
        if "callback" in group.lower():
            closest = CALLBACK_GROUP
        else:
            closest = difflib.get_close_matches(group, known, n=1, cutoff=0)[0]
        result.append((dist, group, closest, sorted(names)))
    return result


def load_registry(
    environ: Mapping[str, str] | None = None,
    sources: Iterable[PluginSource] | None = None,
    warn: bool = True,
) -> Registry:
    """A new :class:`Registry` of the installed entry points, or of ``sources`` (then
    no misspelled group is looked for); ``warn=False`` records failures without warning."""
    environ = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    wanted = [n.strip() for n in environ.get("CVML_PLUGINS", "").split(",") if n.strip()]
    registry = Registry(pm, _env_flag(environ, "CVML_STRICT_PLUGINS"), warn=warn, selected=wanted)
    groups: list[tuple[str, str, str, list[str]]] = []
    if sources is None and _env_flag(environ, "CVML_DISABLE_PLUGIN_AUTOLOAD"):
        sources = []
    elif sources is None:
        entry_points = importlib_metadata.entry_points()  # read once, for both
        sources = installed_plugin_sources(entry_points)
        groups = misspelled_groups(entry_points)
    sources = list(sources)
    if wanted:
        known = {s.name for s in sources} | {s.distribution for s in sources}
        registry.unmatched = [n for n in wanted if n not in known]
        if registry.unmatched:
            registry.selection_error = _unmatched_message(registry.unmatched, sources)
            if registry.warn:
                warnings.warn(registry.selection_error, RuntimeWarning, stacklevel=2)
    for source in sources:
        if not wanted or source.name in wanted or source.distribution in wanted:
            registry.add(source)
    for dist, group, closest, names in groups:
        if not wanted or dist in wanted or set(names) & set(wanted):
            registry.fail(
                dist,
                f"entry point group {group!r} is not one cvml reads (did you mean "
                f"{closest!r}?): its entry points {names} are ignored",
                plugin=names[0] if len(names) == 1 else "",
            )
    return registry


def _unmatched_message(unmatched: list[str], sources: list[PluginSource]) -> str:
    names = sorted({s.name for s in sources} | {s.distribution for s in sources})
    return (
        f"CVML_PLUGINS names {', '.join(map(repr, unmatched))}, which matches no installed "
        "plugin: it takes entry point names (for a cvml.callbacks entry point, the "
        "callback's name) or distribution names; a callback registered from a plugin's "
        "code is selected by its plugin's entry point or distribution. Installed: "
        f"{', '.join(names) if names else 'none'}"
    )


_default: Registry | None = None
_default_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load_registry()
        return _default


def reset_registry() -> None:
    """Forget the process-wide registry (it is loaded again on next use)."""
    global _default
    with _default_lock:
        _default = None


def available_callbacks() -> list[CallbackInfo]:
    """Installed callbacks (name, summary, distribution, version); imports no callback."""
    return get_registry().available()


def create_callback(name: str, *args: Any, **kwargs: Any) -> Any:
    """Build the callback registered as ``name`` (see :meth:`Registry.create`)."""
    return get_registry().create(name, *args, **kwargs)


def call_hook(hook_name: str, **kwargs: Any) -> None:
    """Call a cvml hook on every loaded plugin, isolating failures."""
    get_registry().call_hook(hook_name, **kwargs)
