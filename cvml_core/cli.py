"""The ``cvml`` command: ``cvml plugins`` and ``cvml demo``. Listing imports no TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cvml_core.plugins import load_registry
from cvml_core.table import format_table


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    callbacks = registry.available()
    if args.json:
        payload = [c.to_dict() for c in callbacks] + [e.to_dict() for e in registry.errors]
        print(json.dumps(payload, indent=2))
        return 0
    if callbacks:
        rows = [[c.name, c.distribution, c.version, c.summary] for c in callbacks]
        print(format_table(rows, ["name", "distribution", "version", "summary"]))
    else:
        print("No cvml callbacks installed. Install one, e.g. pip install ./plugins/cvml_ckpt")
    if registry.errors:
        print("\nLoad errors:", file=sys.stderr)
        for error in registry.errors:
            print(f"  {error.distribution}: {error.error}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cvml_core.demo import run_demo

    return run_demo(log_dir=args.log_dir, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvml", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser("plugins", help="list installed callbacks and plugin load errors")
    plugins.add_argument("--json", action="store_true", help="print a JSON list")
    plugins.set_defaults(func=cmd_plugins)
    demo = sub.add_parser("demo", help="train a small CNN on the digits with every callback")
    demo.add_argument("--log-dir", default="runs/demo", help="where the run writes")
    demo.add_argument("--epochs", type=int, default=8, help="number of epochs")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
