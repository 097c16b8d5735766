"""Plugin loading: callbacks by name, and plugin modules implementing hooks.

Two entry point groups:

* ``cvml.callbacks``: ``best-epochs = "my_package:BestEpochs"``. The entry point's name
  is the callback's name, its distribution's summary the one-line summary; nothing is
  imported until the callback is created.
* ``cvml``: a module implementing hooks of :mod:`cvml_core.plugin_host.hookspecs` (an uploader, a
  notifier, or ``cvml_register_callbacks`` to register callbacks from code).

A plugin that fails to import, implements an unknown hook, raises in a hook, or
registers a bad or taken name or a target module that does not exist is reported as a
:class:`LoadError` naming its distribution (with a warning); one that fails while
loading is skipped whole. Every other plugin still loads, and every other hook
implementation still runs. Two distributions registering one name: neither is used,
and creating it raises, naming both. Environment:

* ``CVML_PLUGINS=a,b``: load only these (entry point or distribution names). A name
  that matches no installed entry point or distribution is reported (a warning, and in
  ``cvml plugins``).
* ``CVML_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points.
* ``CVML_STRICT_PLUGINS=1``: a plugin failure raises :class:`PluginError`.

An entry point group that looks like a misspelling of these two (``cvml.callback``,
``cvml_callbacks``, ``cvml-plugins`` ...) is reported as a load error of its
distribution: its entry points would otherwise be ignored without a word.

(About 500 lines, a third of them this documentation and the records' dataclasses:
isolation per distribution and name conflicts are what pluggy does not do.)
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pkgutil
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import importlib_metadata
import pluggy

from cvml_core.plugin_host import hookspecs

ENTRY_POINT_GROUP = "cvml"
CALLBACK_GROUP = "cvml.callbacks"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
TARGET_PATTERN = re.compile(r"^\w+(\.\w+)*:\w+(\.\w+)*$")
HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("cvml_"))


class PluginError(RuntimeError):
    """A plugin could not be loaded or used (raised in strict mode, or on use)."""


class UnknownCallbackError(KeyError):
    """No installed plugin registers a callback by that name."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CallbackInfo:
    """A registered callback: what ``available_callbacks()`` returns.

    ``target`` is ``"module:ClassName"``, or the class when it was registered as one.
    """

    name: str
    summary: str
    distribution: str
    version: str
    target: Any

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "summary": self.summary,
            "distribution": self.distribution,
            "version": self.version,
        }


@dataclass(frozen=True)
class LoadError:
    """A plugin failure: which distribution, and what went wrong (``plugin``: the entry
    point's name, which for a ``cvml.callbacks`` entry point is the callback's name)."""

    distribution: str
    error: str
    plugin: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "error": self.error}


@dataclass(frozen=True)
class PluginSource:
    """What to load: a plugin (an entry point, or an object already imported), or with
    ``target`` a callback named ``name`` (an entry point of ``cvml.callbacks``)."""

    name: str
    distribution: str
    version: str
    entry_point: Any = None
    module: Any = None
    target: Any = None
    summary: str = ""

    def load(self) -> Any:
        if self.entry_point is not None:
            return self.entry_point.load()
        if self.module is not None:
            return self.module
        return pkgutil.resolve_name(self.name)  # by name: "module" or "module:object"


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def installed_plugin_sources(entry_points: Any = None) -> list[PluginSource]:
    """The entry points of both groups, sorted by distribution then name; imports none.

    ``entry_points``: every installed entry point, when the caller read them already.
    """
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


def misspelled_groups(entry_points: Any = None) -> list[tuple[str, str, str, list[str]]]:
    """Entry point groups that look like ``cvml`` or ``cvml.callbacks`` misspelled:
    ``(distribution, group, closest known group, entry point names)``; imports none."""
    if entry_points is None:
        entry_points = importlib_metadata.entry_points()
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


def _callback_info(name: Any, target: Any, summary: Any, source: PluginSource) -> CallbackInfo:
    """Check one registration: the name, and that a target's module exists (not imported)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            "callback name must be lowercase letters, digits, '-' or '_', "
            f"starting with a letter. Received: name={name!r}"
        )
    if not isinstance(target, type):
        if not isinstance(target, str) or not TARGET_PATTERN.match(target):
            raise ValueError(
                f"callback {name!r}: target must be 'module:ClassName' or a class. "
                f"Received: target={target!r}"
            )
        module = target.partition(":")[0]
        try:  # finds the module without running it (its parent packages are imported)
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise ValueError(
                f"callback {name!r}: target module {module!r} does not exist. "
                f"Received: target={target!r}"
            )
    lines = str(summary or "").strip().splitlines()
    return CallbackInfo(
        name, lines[0] if lines else "", source.distribution, source.version, target
    )


@dataclass
class Registry:
    """The loaded plugins: their plugin manager, who registered each name, load errors."""

    pm: pluggy.PluginManager
    strict: bool = False
    #: Who registered each callback name; more than one is a conflict.
    owners: dict[str, list[CallbackInfo]] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    #: Whether a failure is also given as a warning (``cvml plugins`` prints it instead).
    warn: bool = True
    #: ``CVML_PLUGINS`` as given (empty: every plugin loads).
    selected: list[str] = field(default_factory=list)
    #: Names in ``CVML_PLUGINS`` that match no installed entry point or distribution,
    #: and the message that says so ("" when none).
    unmatched: list[str] = field(default_factory=list)
    selection_error: str = ""

    def fail(
        self,
        distribution: str,
        message: str,
        exc: BaseException | None = None,
        plugin: str = "",
    ) -> None:
        """Record a plugin failure and warn; in strict mode raise it."""
        self.errors.append(LoadError(distribution, message, plugin))
        if self.strict:
            raise PluginError(
                f"plugin distribution {distribution!r} failed: {message} "
                "(CVML_STRICT_PLUGINS is set)"
            ) from exc
        if self.warn:
            warnings.warn(
                f"cvml plugin distribution {distribution!r}: {message}",
                RuntimeWarning, stacklevel=3,
            )

    def add(self, source: PluginSource) -> None:
        """Load one plugin or callback entry point; a failure is reported (:meth:`fail`)."""
        plugin_name = f"{source.distribution}:{source.name}"
        found: list[CallbackInfo] = []

        def register(name: str, target: Any, summary: str = "") -> None:
            info = _callback_info(name, target, summary, source)
            if any(i.name == name for i in found):
                raise ValueError(f"callback name {name!r} is registered twice")
            found.append(info)

        try:
            if source.target is not None:
                register(source.name, source.target, source.summary)
            else:
                self.pm.register(source.load(), name=plugin_name)
                self.pm.check_pending()  # a hook implementation without a spec
                for impl in self.pm.hook.cvml_register_callbacks.get_hookimpls():
                    if impl.plugin_name == plugin_name:  # it may leave the argument out
                        impl.function(**({"register": register} if impl.argnames else {}))
            self._claim(found)
        except Exception as exc:
            if self.pm.has_plugin(plugin_name):
                self.pm.unregister(name=plugin_name)
            hint = (
                f"; known hooks: {HOOK_NAMES}"
                if isinstance(exc, pluggy.PluginValidationError) else ""
            )
            self.fail(
                source.distribution,
                f"plugin {source.name!r} is skipped: {type(exc).__name__}: {exc}{hint}",
                exc,
                plugin=source.name,
            )

    def _claim(self, infos: list[CallbackInfo]) -> None:
        """Take the names, or record the ones already taken as conflicts and raise."""
        taken = [info for info in infos if info.name in self.owners]
        for info in taken or infos:
            self.owners.setdefault(info.name, []).append(info)
        if taken:
            raise ValueError(self._conflict_message(taken[0].name))

    def _conflict_message(self, name: str) -> str:
        owners = ", ".join(f"{i.distribution} {i.version}" for i in self.owners[name])
        return (
            f"callback name {name!r} is registered by several distributions ({owners}); "
            "uninstall all but one, or pick plugins with CVML_PLUGINS"
        )

    def available(self) -> list[CallbackInfo]:
        """The usable callbacks (conflicting names left out), sorted by name."""
        return [infos[0] for _, infos in sorted(self.owners.items()) if len(infos) == 1]

    def callback_class(self, name: str) -> type:
        """Import and return the class registered as ``name``.

        A class that sets no ``name`` of its own gets this one (its folder and its label
        in artifacts), so an author writes the name once, where it is registered.
        """
        infos = self.owners.get(name, [])
        if len(infos) > 1:
            raise PluginError(self._conflict_message(name))
        if not infos:
            raise UnknownCallbackError(self._unknown_message(name))
        info = infos[0]
        cls = info.target
        if isinstance(cls, str):
            try:
                cls = pkgutil.resolve_name(cls)
            except Exception as exc:
                raise PluginError(
                    f"callback {name!r} from {info.distribution} {info.version}: cannot "
                    f"import {info.target}: {type(exc).__name__}: {exc}"
                ) from exc
        if isinstance(cls, type) and "name" not in vars(cls):
            cls.name = name  # type: ignore[attr-defined]
        return cls

    def _unknown_message(self, name: str) -> str:
        """Why ``name`` is not available: its load error, the others, the selection."""
        names = sorted(self.owners)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        message = (
            f"no callback named {name!r}.{hint} Available: "
            f"{', '.join(names) if names else 'none (install a cvml plugin package)'}"
        )
        own = [e for e in self.errors if e.plugin == name or f"{name!r}" in e.error]
        if own:
            error = own[0]
            return (
                f"callback {name!r} failed to load ({error.distribution}): {error.error}. "
                f"Fix or reinstall {error.distribution}; `cvml plugins` lists load errors. "
                f"({message})"
            )
        if self.errors:
            failed = "; ".join(f"{e.distribution}: {e.error}" for e in self.errors)
            message += (
                f". {len(self.errors)} plugin(s) failed to load, one may provide it: "
                f"{failed}"
            )
        if self.selection_error:
            message += f". {self.selection_error}"
        elif self.selected:
            message += (
                f". Only the plugins named by CVML_PLUGINS={','.join(self.selected)!r} "
                "were loaded"
            )
        return message

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the callback registered as ``name``; an error raised while building it
        is re-raised as :class:`PluginError` naming the callback and its distribution."""
        cls = self.callback_class(name)
        try:
            return cls(*args, **kwargs)
        except Exception as exc:
            info = self.owners[name][0]
            raise PluginError(
                f"callback {name!r} ({info.distribution} {info.version}) could not be "
                f"created: {type(exc).__name__}: {exc}"
            ) from exc

    def call_hook(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name``, each on its own.

        pluggy's own call stops at the first implementation that raises; here one that
        raises is a failure of its distribution (:meth:`fail`) and the others still run.
        """
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames if a in kwargs})
            except Exception as exc:
                dist = impl.plugin_name.partition(":")[0]
                self.fail(dist, f"{hook_name} raised {type(exc).__name__}: {exc}", exc)


_registered_names: dict[type, str | None] = {}


def registered_name(cls: type) -> str | None:
    """The name a ``cvml.callbacks`` entry point gives ``cls``, or None; reads
    metadata only, once per class (for a class built directly, not by name)."""
    if cls not in _registered_names:
        target = f"{cls.__module__}:{cls.__qualname__}"
        _registered_names[cls] = next(
            (str(ep.name) for ep in importlib_metadata.entry_points(group=CALLBACK_GROUP)
             if ep.value.replace(" ", "") == target),
            None,
        )
    return _registered_names[cls]


def load_registry(
    environ: Mapping[str, str] | None = None,
    sources: Iterable[PluginSource] | None = None,
    warn: bool = True,
) -> Registry:
    """Build a new :class:`Registry` from the entry points.

    ``sources`` replaces the installed entry points (tests pass plugin objects), and
    then no misspelled group is looked for. ``warn=False``: failures are recorded in
    :attr:`Registry.errors` without warnings (the caller reports them).
    """
    environ = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm=pm, strict=_env_flag(environ, "CVML_STRICT_PLUGINS"), warn=warn)
    wanted = [n.strip() for n in environ.get("CVML_PLUGINS", "").split(",") if n.strip()]
    registry.selected = wanted
    groups: list[tuple[str, str, str, list[str]]] = []
    if sources is None:
        autoload = not _env_flag(environ, "CVML_DISABLE_PLUGIN_AUTOLOAD")
        if autoload:
            entry_points = importlib_metadata.entry_points()  # read once, for both
            sources = installed_plugin_sources(entry_points)
            groups = misspelled_groups(entry_points)
        else:
            sources = []
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
    """Import the callback registered as ``name`` and build it with the arguments.

    Raises :class:`UnknownCallbackError` (with the load error of a plugin that failed,
    if one did) or :class:`PluginError` (a conflict, a missing class, or an error
    raised by the class while it was built, naming the callback and its distribution).
    """
    return get_registry().create(name, *args, **kwargs)


def call_hook(hook_name: str, **kwargs: Any) -> None:
    """Call a cvml hook on every loaded plugin, isolating failures."""
    get_registry().call_hook(hook_name, **kwargs)
