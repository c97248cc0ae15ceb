"""``pppml run CONFIG [--out DIR] [--set KEY=VALUE ...] [--resume [--extend] | --overwrite]``.

Trains and compares the algorithms of a config. An output directory holds one run: a
non-empty ``--out`` is refused unless ``--resume`` continues the run recorded there (same
fingerprint, ``fingerprint.json``) or ``--overwrite`` replaces it; ``--resume --extend``
trains a finished run for more rounds (``--set training.rounds=...``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pppml_jax.cli._args import add_set_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the algorithms of a config file and write results.json, summary.md, figures",
        description="Runs every algorithm of CONFIG on the same data and initial model.",
    )
    parser.add_argument("config", help="a YAML config file, e.g. configs/quickstart.yaml")
    parser.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    add_set_argument(
        parser,
        dest="overrides",
        help="override a config value by dotted key, e.g. --set training.rounds=3 (repeatable)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue each algorithm of the run in --out from its latest intact checkpoint "
        "(refused if the config differs from that run's fingerprint)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run outputs already in --out (otherwise a non-empty --out is refused)",
    )
    parser.add_argument(
        "--extend",
        action="store_true",
        help="with --resume: allow training.rounds (or overrides.<label>.rounds) to grow, and "
        "train a finished run for the extra rounds",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an input error"
    )
    parser.set_defaults(func=main)


class Progress:
    """Prints one line per round and per algorithm; the only place runs are printed."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.metric = "metric"

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "data":
            sizes = ", ".join(
                f"{n} ({a} train / {b} test)"
                for n, a, b in zip(event["clients"], event["n_train"], event["n_test"], strict=True)
            )
            self._print(f"data: {event['task']}, {len(event['clients'])} clients: {sizes}")
        elif kind == "resume":
            self._print(f"{event['algorithm']}: resuming after round {event['round']}")
        elif kind == "start":
            self._print(
                f"\n== {event['algorithm']}: {event['rounds']} rounds, "
                f"{event['execution']} execution"
            )
        elif kind == "round":
            line = (
                f"[{event['algorithm']:>9}] round {event['round']:>3}/{event['of']}  "
                f"loss {event['train_loss']:.4f}  {event['seconds']:6.2f} s"
            )
            if "mean_global" in event:
                line += (
                    f"  global {event['mean_global']:.3f}"
                    f"  personalized {event['mean_personalized']:.3f}"
                )
            if "secure" in event:
                line += f"  ring {event['secure'].get('bytes', 0) / 1e6:.1f} MB"
            self._print(line)

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def main(args: argparse.Namespace) -> int:
    from pppml_jax.experiments.config import ConfigError, load_config
    from pppml_jax.experiments.report import per_client_table
    from pppml_jax.experiments.runner import run_experiment

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"pppml run: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / config.name)
    start = time.perf_counter()
    try:
        results = run_experiment(
            config,
            out,
            callback=Progress(args.quiet),
            resume=args.resume,
            overwrite=args.overwrite,
            extend=args.extend,
        )
    except (ConfigError, ValueError, FileNotFoundError) as err:
        # bad input (config, data, options): a clear message, not a deep traceback
        if args.debug:
            raise
        print(f"pppml run: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(f"\nTest {results['metric']} per client after the last round:\n")
    print(per_client_table(results))
    print(f"\nwrote {', '.join(results['files'])} to {out}/ in {time.perf_counter() - start:.0f} s")
    return 0
