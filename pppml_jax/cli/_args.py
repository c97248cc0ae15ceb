"""Arguments shared by the ``pppml`` sub-commands."""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, *, dest: str, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option (values parsed as YAML), collected in ``dest``."""
    parser.add_argument(
        "--set", dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help
    )
