"""The registry of loaded plugins (filled by :mod:`cvml_core.plugin_host.loader`): who
registered which callback name, the plugins that failed, building a callback by name."""

from __future__ import annotations

import difflib
import importlib.util
import pkgutil
import re
import warnings
from dataclasses import asdict, dataclass, field
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
    """A registered callback (``target``: ``"module:ClassName"`` or the class)."""

    name: str
    summary: str
    distribution: str
    version: str
    target: Any

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if k != "target"}


@dataclass(frozen=True)
class LoadError:
    """A plugin failure: its distribution, the error, and the entry point's name."""

    distribution: str
    error: str
    plugin: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "error": self.error}


@dataclass(frozen=True)
class PluginSource:
    """What to load: a plugin (an entry point or an object already imported), or with
    ``target`` a callback named ``name`` (a ``cvml.callbacks`` entry point)."""

    name: str
    distribution: str
    version: str
    entry_point: Any = None
    module: Any = None
    target: Any = None
    summary: str = ""

    def load(self) -> Any:
        return self.entry_point.load() if self.entry_point is not None else self.module


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
    first_line = (str(summary or "").strip().splitlines() or [""])[0]
    return CallbackInfo(name, first_line, source.distribution, source.version, target)


@dataclass
class Registry:
    """The loaded plugins: who registered each name (several: a conflict), load errors,
    and the ``CVML_PLUGINS`` selection with its names that match nothing installed."""

    pm: pluggy.PluginManager
    strict: bool = False
    owners: dict[str, list[CallbackInfo]] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    warn: bool = True
    selected: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    selection_error: str = ""

    def fail(self, distribution: str, message: str, exc: BaseException | None = None,
             plugin: str = "") -> None:
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
        """Import the class registered as ``name`` (:func:`registered_name` gives it)."""
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
        if isinstance(cls, type):
            _names[cls] = name
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
        """Build the callback registered as ``name`` (given that ``name`` if it has none);
        an error while building it becomes a :class:`PluginError` naming the callback."""
        cls = self.callback_class(name)
        try:
            callback = cls(*args, **kwargs)
        except Exception as exc:
            info = self.owners[name][0]
            raise PluginError(
                f"callback {name!r} ({info.distribution} {info.version}) could not be "
                f"created: {type(exc).__name__}: {exc}"
            ) from exc
        if not hasattr(callback, "name"):
            callback.name = name
        return callback

    def call_hook(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name``: unlike pluggy's own call, one that
        raises is a failure of its distribution (:meth:`fail`) and the others still run."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames if a in kwargs})
            except Exception as exc:
                dist = impl.plugin_name.partition(":")[0]
                self.fail(dist, f"{hook_name} raised {type(exc).__name__}: {exc}", exc)


#: Each callback class's registered name, or None (see :func:`registered_name`).
_names: dict[type, str | None] = {}


def registered_name(cls: type) -> str | None:
    """A class's own ``name``, else the one its registration or entry point gives it."""
    own = vars(cls).get("name")
    if isinstance(own, str):
        return own
    if cls not in _names:
        target = f"{cls.__module__}:{cls.__qualname__}"
        _names[cls] = next(
            (str(ep.name) for ep in importlib_metadata.entry_points(group=CALLBACK_GROUP)
             if ep.value.replace(" ", "") == target),
            None,
        )
    return _names[cls]
