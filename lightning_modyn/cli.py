"""The ``lightning-modyn`` command.

Subcommands:
    run     replay a stream, trigger, select, fit and evaluate, from a LightningCLI recipe (--config recipe.yaml)
    ingest  index existing WebDataset tar shards into a store (created if needed), with a progress bar
    info    what a store holds: samples, shards, bytes, time range, labels, deleted
    demo    the end-to-end store walk-through: generate data, ingest, append records, read, delete, compact
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from lightning_modyn.store import SampleStore, StoreError, StoreNotFoundError


def _int_or_ext(value: str | None):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _positive_int(value: str) -> int:
    """argparse type of a count: a whole number > 0 (argparse names the option in its error)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {number}")
    return number


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        store = SampleStore.open(args.store)
    except StoreNotFoundError:
        if not args.create:
            raise
        store = SampleStore.create(args.store)
    with store:
        keys = store.ingest(args.shards, timestamps=_int_or_ext(args.timestamps), labels=args.labels,
                            progress=not args.quiet, hand_over=args.hand_over)
        print(f"indexed {len(keys)} samples from {len(args.shards)} shard(s) into {store.url}"
              + (f" (keys {keys[0]}..{keys[-1]})" if len(keys) else "")
              + ("; the files are the store's now" if args.hand_over else "; the files stay yours"))
    return 0


def format_info(info: dict) -> str:
    """The table ``lightning-modyn info`` prints."""
    lines = [
        f"store          {info['url']}",
        f"samples        {info['samples']:,} live",
        f"deleted        {info['deleted']:,} keys ({info['awaiting_compaction']:,} still on disk until compact)",
        f"shards         {info['shards']:,}",
        f"bytes          {info['bytes']:,}",
        f"time range     {info['min_timestamp']} .. {info['max_timestamp']}",
        f"record dtype   {info['record_dtype'] or '-'}",
    ]
    counts = info["label_counts"]
    if counts:
        shown = ", ".join(f"{label}: {n:,}" for label, n in list(counts.items())[:20])
        more = f" (+{len(counts) - 20} more labels)" if len(counts) > 20 else ""
        lines.append(f"labels         {shown}{more}")
    else:
        lines.append("labels         -")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    with SampleStore.open(args.url, readonly=True) as store:
        info = store.info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lightning_modyn.demo import run_demo

    run_demo(args.store, samples=args.samples, rows=args.rows, seed=args.seed)
    return 0


def cmd_run(argv: Sequence[str]) -> int:
    from lightning_modyn.recipe import run_recipe

    run_recipe(list(argv))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-modyn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run a recipe: lightning-modyn run --config recipes/rotating_digits.yaml",
                   add_help=False)
    p = sub.add_parser("ingest", help="index existing WebDataset tar shards into a store")
    p.add_argument("shards", nargs="+", help="uncompressed .tar shards (paths or fsspec URLs)")
    p.add_argument("--store", required=True, help="store directory or fsspec URL")
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")
    p.add_argument("--labels", default=None, help="extension of an integer member to take labels from (e.g. cls)")
    p.add_argument("--timestamps", default=None,
                   help="one integer timestamp for all samples, or the extension of a member holding it")
    p.add_argument("--hand-over", action="store_true",
                   help="give the files to the store: compact() may rewrite and remove them (default: they stay "
                        "yours and are never changed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("info", help="summary of a store")
    p.add_argument("url", help="store directory or fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="generate data and walk through the store: ingest, read, delete, compact")
    p.add_argument("store", nargs="?", default="runs/demo-store", help="where to create the demo store (new dir)")
    p.add_argument("--samples", type=_positive_int, default=20_000, help="image samples written as WebDataset shards")
    p.add_argument("--rows", type=_positive_int, default=1_000_000, help="Criteo-format records appended")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


USER_ERRORS = (StoreError, ValueError, TypeError, KeyError, OSError)  # OSError: names its file
DEBUG_ENV = "LIGHTNING_MODYN_DEBUG"
"""Set to 1 to see the traceback of an error that a subcommand reports as one ``error:`` line."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run = bool(argv) and argv[0] == "run"  # LightningCLI parses the recipe (model, data, trainer, pipeline)
    if not run:
        args = build_parser().parse_args(argv)
    try:
        return cmd_run(argv[1:]) if run else args.func(args)
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"lightning-modyn {'run' if run else args.command}: error: {message} (set {DEBUG_ENV}=1 for the "
              "traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
