"""The ``pppml`` command: ``run`` experiments, prepare ``data``, ``bench`` and ``attack``."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# Each sub-command lives in its own module exposing register(subparsers).
_COMMANDS = ("run", "data", "bench", "attack")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pppml",
        description="Personalized, privacy-preserving federated learning (PPPML-HMI) in JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pppml_jax.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pppml_jax.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
