"""The ``cvml`` command: ``cvml plugins`` and ``cvml demo``. Listing imports no TensorFlow."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

import importlib_metadata

from cvml_core.plugin_host.loader import PluginError, Registry, load_registry
from cvml_core.train.table import format_table

DESCRIPTION = "cvml callbacks: list the installed plugins, or run the demo."
PLUGINS_HELP = (
    "List the installed callbacks (no TensorFlow import), the hook plugins (e.g. teams, "
    "from cvml-teams; in --json, entries with 'hook_plugin') and the plugins that failed to "
    "load. Exit status: 0 when every plugin loaded, 1 when one failed to load (each "
    "reason is printed once, on stderr, or as an entry with 'error' in --json) or "
    "CVML_PLUGINS names nothing installed."
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
    """The loaded plugins with hooks other than ``cvml_register_callbacks`` (notifiers,
    listeners): entry point name, distribution, version and hooks, sorted by name."""
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


#: What quiets TensorFlow's own logging, unless the user set it (or passes --verbose):
#: 2 keeps its C++ errors, drops its info and warning lines.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@contextlib.contextmanager
def _stderr_captured() -> Iterator[IO[bytes]]:
    """Send file descriptor 2 (where native libraries log) to a temporary file meanwhile."""
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_start(verbose: bool = False) -> None:
    """Import TensorFlow without its start-up noise; call it before anything imports it.

    TensorFlow's native libraries log to stderr while they load (oneDNN, CUDA drivers
    not found, CPU instructions, cuInit), some before ``TF_CPP_MIN_LOG_LEVEL`` is
    honoured. Unless ``verbose``, or the user set ``TF_CPP_MIN_LOG_LEVEL`` (their choice
    stands), this sets :data:`QUIET_ENV`, imports TensorFlow and lists its devices with
    stderr sent to a temporary file (shown if the import fails), and turns absl's
    Python logging down to errors.
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ.update(QUIET_ENV)
    error: BaseException | None = None
    noise = ""
    with _stderr_captured() as captured:
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here
        except BaseException as exc:  # shown with what TensorFlow logged, then raised
            error = exc
            captured.seek(0)
            noise = captured.read().decode(errors="replace")
    if error is not None:
        sys.stderr.write(noise)
        raise error
    with contextlib.suppress(ImportError):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


def cmd_demo(args: argparse.Namespace) -> int:
    from cvml_core.train.demo import run_demo

    quiet_tensorflow_start(verbose=args.verbose)
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
