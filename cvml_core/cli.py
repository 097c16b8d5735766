"""The ``cvml`` command: ``cvml plugins`` and ``cvml demo``. Listing imports no TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import importlib_metadata

from cvml_core.plugin_host.loader import PluginError, Registry, load_registry
from cvml_core.train.table import format_table

DESCRIPTION = "cvml callbacks: list the installed plugins, or run the demo."
PLUGINS_HELP = (
    "List the installed callbacks (no TensorFlow import), the hook plugins (in --json, "
    "entries with 'hook_plugin') and the plugins that failed to load (once, on stderr; "
    "in --json, entries with 'error'). Exit status: 1 when one failed to load or "
    "CVML_PLUGINS names nothing installed, else 0."
)


def _no_callbacks_line(registry: Registry) -> str:
    """Why the table is empty: failures, a selection, or nothing installed."""
    if registry.errors:
        return f"No cvml callbacks loaded: {len(registry.errors)} plugin(s) failed (below)."
    if registry.selected:
        return (
            f"No cvml callbacks among the plugins selected by "
            f"CVML_PLUGINS={','.join(registry.selected)!r}."
        )
    return "No cvml callbacks installed. Install one, e.g. pip install ./plugins/cvml_ckpt"


def hook_plugins(registry: Registry) -> list[dict[str, Any]]:
    """The loaded plugins with hooks other than ``cvml_register_callbacks``, by name."""
    found = []
    for plugin_name, plugin in registry.pm.list_name_plugin():
        hooks = sorted(
            c.name for c in registry.pm.get_hookcallers(plugin) or []
            if c.name != "cvml_register_callbacks"
        )
        if not hooks:
            continue
        dist, _, name = plugin_name.partition(":")
        try:
            version = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            version = ""
        found.append(
            {"hook_plugin": name, "distribution": dist, "version": version, "hooks": hooks}
        )
    return sorted(found, key=lambda entry: str(entry["hook_plugin"]))


def cmd_plugins(args: argparse.Namespace) -> int:
    try:
        registry = load_registry(warn=False)  # each failure is printed once, below
    except PluginError as exc:  # CVML_STRICT_PLUGINS=1: the first failure, no traceback
        print(f"cvml plugins: error: {exc}", file=sys.stderr)
        return 1
    callbacks = registry.available()
    hooked = hook_plugins(registry)
    if args.json:  # callbacks, then hook plugins (no "name" key), then errors
        payload: list[dict[str, Any]] = [c.to_dict() for c in callbacks]
        payload += hooked + [e.to_dict() for e in registry.errors]
        print(json.dumps(payload, indent=2))
    else:
        if callbacks:
            rows = [[c.name, c.distribution, c.version, c.summary] for c in callbacks]
            print(format_table(rows, ["name", "distribution", "version", "summary"]))
        else:
            print(_no_callbacks_line(registry))
        if hooked:
            rows = [[str(h["hook_plugin"]), str(h["distribution"]), str(h["version"]),
                     ", ".join(map(str, h["hooks"]))] for h in hooked]
            print("\nHook plugins:")
            print(format_table(rows, ["plugin", "distribution", "version", "hooks"]))
    if registry.selection_error:
        print(f"\n{registry.selection_error}", file=sys.stderr)
    if registry.errors:
        print("\nLoad errors (these plugins' callbacks are not available):", file=sys.stderr)
        for error in registry.errors:
            print(f"  {error.distribution}: {error.error}", file=sys.stderr)
    return 1 if registry.errors or registry.unmatched else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cvml_core.train.demo import run_demo
    from cvml_core.train.quiet import quiet_tensorflow_start

    try:
        quiet_tensorflow_start(verbose=args.verbose)
    except ImportError as exc:  # no TensorFlow: say what to install
        print(f"cvml demo: {exc}", file=sys.stderr)
        return 1
    return run_demo(log_dir=args.log_dir, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvml", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser(
        "plugins", description=PLUGINS_HELP,
        help="list installed callbacks and plugin load errors (exit 1 if a plugin failed)",
    )
    plugins.add_argument("--json", action="store_true", help="print a JSON list")
    plugins.set_defaults(func=cmd_plugins)
    demo = sub.add_parser("demo", help="train a small CNN on the digits with every callback")
    demo.add_argument("--log-dir", default="runs/demo", help="where the run writes")
    demo.add_argument("--epochs", type=int, default=8, help="number of epochs")
    demo.add_argument(
        "--verbose", action="store_true",
        help="keep TensorFlow's start-up log lines (hidden unless TF_CPP_MIN_LOG_LEVEL is set)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
