"""Plugin loading: entry points in group ``cvml``, callback registration by name.

Failures are isolated here. A plugin that fails to import, raises in a hook,
registers a bad or taken name, or a target that does not exist is reported as a
:class:`LoadError` naming its distribution, and every other plugin still loads.

Environment:

* ``CVML_PLUGINS=a,b``: load only these plugins (entry point or distribution names);
  the built-in plugins stay.
* ``CVML_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points.
* ``CVML_STRICT_PLUGINS=1``: a plugin failure raises :class:`PluginError`.

Two distributions registering the same callback name is a conflict: the name is
listed as a load error naming both, and ``create_callback`` of that name raises,
naming both, until one is uninstalled or excluded with ``CVML_PLUGINS``.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import importlib_metadata
import pluggy

from cvml_core import hookspecs

ENTRY_POINT_GROUP = "cvml"
CORE_DISTRIBUTION = "cvml-core"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
BUILTIN_PLUGINS: tuple[str, ...] = ("cvml_core.teams",)
HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("cvml_"))


class PluginError(RuntimeError):
    """A plugin could not be loaded or used (raised in strict mode, or on use)."""


class UnknownCallbackError(KeyError):
    """No installed plugin registers a callback by that name."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CallbackInfo:
    """A registered callback: what ``available_callbacks()`` returns."""

    name: str
    summary: str
    distribution: str
    version: str
    target: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "summary": self.summary,
            "distribution": self.distribution,
            "version": self.version,
        }


@dataclass(frozen=True)
class LoadError:
    """A plugin failure: which distribution, and what went wrong."""

    distribution: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "error": self.error}


@dataclass(frozen=True)
class PluginSource:
    """A plugin to load: an entry point, or an object already imported (built-ins, tests)."""

    name: str
    distribution: str
    version: str
    entry_point: Any = None
    module: Any = None

    def load(self) -> Any:
        if self.entry_point is not None:
            return self.entry_point.load()
        if self.module is not None:
            return self.module
        return importlib.import_module(self.name)


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def installed_plugin_sources() -> list[PluginSource]:
    """Every entry point in group ``cvml``, sorted by distribution then name."""
    sources = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        sources.append(
            PluginSource(
                name=ep.name,
                distribution=dist.name if dist is not None else f"<unknown: {ep.value}>",
                version=dist.version if dist is not None else "",
                entry_point=ep,
            )
        )
    return sorted(sources, key=lambda s: (s.distribution.lower(), s.name))


def _builtin_sources() -> list[PluginSource]:
    version = _core_version()
    return [
        PluginSource(name=mod, distribution=CORE_DISTRIBUTION, version=version, module=None)
        for mod in BUILTIN_PLUGINS
    ]


def _core_version() -> str:
    try:
        return importlib_metadata.version(CORE_DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def _target_problem(target: str) -> str | None:
    """Why ``"module:Class"`` cannot be imported later, or None; imports nothing new.

    The module is found with ``find_spec`` (which imports parent packages only) and,
    for a source file, the class name is looked up in its top-level statements.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr or not attr.isidentifier():
        return f"target must be 'module:ClassName' or a class. Received: target={target!r}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"target module {module_name!r} cannot be found: {exc}"
    if spec is None:
        return f"target module {module_name!r} does not exist"
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"target module {module_name!r} cannot be read: {exc}"
    defined: set[str] = set()
    nodes = list(tree.body)
    while nodes:  # module level, including the bodies of if/try/with blocks
        node = nodes.pop()
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" for a in node.names):
                return None  # a star import may define it: only importing can tell
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                nodes.extend(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                nodes.extend(handler.body)
    if attr not in defined and "__getattr__" not in defined:
        return f"target {target!r}: module {module_name!r} defines no {attr!r}"
    return None


@dataclass
class Registry:
    """The loaded plugins: their plugin manager, callbacks by name and load errors."""

    pm: pluggy.PluginManager
    strict: bool = False
    callbacks: dict[str, CallbackInfo] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)
    conflicts: dict[str, list[CallbackInfo]] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    distributions: dict[str, str] = field(default_factory=dict)  # plugin name -> dist

    def fail(self, distribution: str, message: str, exc: BaseException | None = None) -> None:
        """Record a plugin failure; in strict mode raise it."""
        error = LoadError(distribution, message)
        self.errors.append(error)
        if self.strict:
            raise PluginError(
                f"plugin distribution {distribution!r} failed: {message} "
                "(CVML_STRICT_PLUGINS is set)"
            ) from exc
        warnings.warn(
            f"cvml plugin distribution {distribution!r} failed and is skipped: {message}",
            RuntimeWarning,
            stacklevel=3,
        )

    def _register_from(self, source: PluginSource, plugin: Any, plugin_name: str) -> None:
        """Call one plugin's ``cvml_register_callbacks`` with a checking ``register``.

        Its names are added only if the whole hook succeeds; otherwise the plugin is
        unregistered (skipped, as the warning says) and reported.
        """
        impl = getattr(plugin, "cvml_register_callbacks", None)
        if impl is None:
            return
        staged: dict[str, tuple[CallbackInfo, type | None]] = {}

        def register(name: str, target: Any, summary: str = "") -> None:
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise ValueError(
                    "callback name must be lowercase letters, digits, '-' or '_', "
                    f"starting with a letter. Received: name={name!r}"
                )
            if isinstance(target, type):
                target_str = f"{target.__module__}:{target.__qualname__}"
            elif isinstance(target, str):
                problem = _target_problem(target)
                if problem:
                    raise ValueError(f"callback {name!r}: {problem}")
                target_str = target
            else:
                raise ValueError(
                    f"callback {name!r}: target must be 'module:ClassName' or a class. "
                    f"Received: target={target!r}"
                )
            lines = str(summary or "").strip().splitlines()
            info = CallbackInfo(
                name, lines[0] if lines else "", source.distribution, source.version, target_str
            )
            if name in self.conflicts:
                self.conflicts[name].append(info)
                raise ValueError(self._conflict_message(name))
            if name in staged:
                raise ValueError(f"callback name {name!r} is registered twice")
            if name in self.callbacks:
                other = self.callbacks.pop(name)
                self.classes.pop(name, None)
                self.conflicts[name] = [other, info]
                raise ValueError(self._conflict_message(name))
            staged[name] = (info, target if isinstance(target, type) else None)

        try:
            impl(register=register)
        except Exception as exc:
            self.pm.unregister(name=plugin_name)
            self.distributions.pop(plugin_name, None)
            self.fail(source.distribution, f"cvml_register_callbacks: {exc}", exc)
            return
        for name, (info, cls) in staged.items():
            self.callbacks[name] = info
            if cls is not None:
                self.classes[name] = cls

    def _conflict_message(self, name: str) -> str:
        owners = ", ".join(f"{i.distribution} {i.version}" for i in self.conflicts[name])
        return (
            f"callback name {name!r} is registered by several distributions ({owners}); "
            "uninstall all but one, or pick plugins with CVML_PLUGINS"
        )

    def add(self, source: PluginSource) -> None:
        """Import and register one plugin; failures are reported, not raised."""
        try:
            plugin = source.load()
        except Exception as exc:
            self.fail(
                source.distribution,
                f"import of plugin {source.name!r} failed: {type(exc).__name__}: {exc}",
                exc,
            )
            return
        plugin_name = f"{source.distribution}:{source.name}"
        unknown = sorted(
            attr for attr in dir(plugin)
            if self.pm.parse_hookimpl_opts(plugin, attr) is not None
            and not hasattr(hookspecs, attr)
        )
        if unknown:
            self.fail(
                source.distribution,
                f"plugin {source.name!r} implements unknown hook(s) {unknown}; "
                f"known hooks: {sorted(HOOK_NAMES)}",
            )
            return
        try:
            self.pm.register(plugin, name=plugin_name)
        except Exception as exc:
            self.fail(source.distribution, f"plugin {source.name!r}: {exc}", exc)
            return
        self.distributions[plugin_name] = source.distribution
        self._register_from(source, plugin, plugin_name)

    # -- lookups -------------------------------------------------------------------

    def available(self) -> list[CallbackInfo]:
        return [self.callbacks[name] for name in sorted(self.callbacks)]

    def callback_class(self, name: str) -> type:
        """Import and return the class registered as ``name``."""
        if name in self.conflicts:
            raise PluginError(self._conflict_message(name))
        if name not in self.callbacks:
            names = sorted(self.callbacks)
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownCallbackError(
                f"no callback named {name!r}.{hint} Available: "
                f"{', '.join(names) if names else 'none (install a cvml plugin package)'}"
            )
        if name not in self.classes:
            info = self.callbacks[name]
            module_name, _, attr = info.target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:
                raise PluginError(
                    f"callback {name!r} from {info.distribution} {info.version}: cannot "
                    f"import {info.target}: {type(exc).__name__}: {exc}"
                ) from exc
            self.classes[name] = obj
        return self.classes[name]

    def call_hook(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name``, each on its own.

        A plugin that raises is reported as a warning naming its distribution
        (raised as :class:`PluginError` in strict mode); the others still run.
        """
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            try:
                impl.function(**args)
            except Exception as exc:
                dist = self.distributions.get(impl.plugin_name, impl.plugin_name)
                message = f"{hook_name} raised {type(exc).__name__}: {exc}"
                if self.strict:
                    raise PluginError(
                        f"plugin distribution {dist!r} failed: {message}"
                    ) from exc
                warnings.warn(
                    f"cvml plugin distribution {dist!r}: {message}",
                    RuntimeWarning,
                    stacklevel=2,
                )


def load_registry(
    environ: Mapping[str, str] | None = None,
    sources: Iterable[PluginSource] | None = None,
) -> Registry:
    """Build a new :class:`Registry`: built-in plugins, then entry points.

    ``sources`` replaces the installed entry points (tests pass plugin objects).
    """
    environ = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm=pm, strict=_env_flag(environ, "CVML_STRICT_PLUGINS"))
    for builtin in _builtin_sources():
        registry.add(builtin)
    if sources is None:
        if _env_flag(environ, "CVML_DISABLE_PLUGIN_AUTOLOAD"):
            sources = []
        else:
            sources = installed_plugin_sources()
    wanted = {n.strip() for n in environ.get("CVML_PLUGINS", "").split(",") if n.strip()}
    for source in sources:
        if wanted and source.name not in wanted and source.distribution not in wanted:
            continue
        registry.add(source)
    return registry


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
    """Import the callback registered as ``name`` and build it with the arguments."""
    return get_registry().callback_class(name)(*args, **kwargs)


def call_hook(hook_name: str, **kwargs: Any) -> None:
    """Call a cvml hook on every loaded plugin, isolating failures."""
    get_registry().call_hook(hook_name, **kwargs)
