"""The ``pppml`` command: ``run`` experiments, prepare ``data``, ``bench`` and ``attack``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from pppml_jax.cli import attack, bench, data, run

# Each sub-command lives in its own module exposing register(subparsers).
_COMMANDS = (run, data, bench, attack)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pppml",
        description="Personalized, privacy-preserving federated learning (PPPML-HMI) in JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for the command line.

    Identical programs (local and fedavg share their client step, perfedavg and pppml theirs;
    runs that differ only in seeds or float hyper-parameters share all of them) are then
    compiled once per machine, not once per algorithm and run. The directory is
    ``$PPPML_COMPILATION_CACHE`` or ``pppml_jax.data.paths.cache_dir() / "xla"``; set the
    variable to an empty string to disable. Library code never changes JAX's configuration:
    only this application does.
    """
    from pppml_jax.data.paths import cache_dir
    from pppml_jax.federation.compilation import enable_compilation_cache as enable

    directory = os.environ.get("PPPML_COMPILATION_CACHE")
    if directory == "":
        return None
    return str(enable(directory or cache_dir() / "xla"))


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    enable_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
