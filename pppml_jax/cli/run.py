"""``pppml run CONFIG [--out DIR] [--seeds N] [--set KEY=VALUE ...] [--resume [--extend] |
--overwrite] [--quiet]``.

Trains and compares the algorithms of a config over one or more seeds. An output directory
holds one run: a non-empty ``--out`` is refused unless ``--resume`` continues the run recorded
there (same fingerprint, ``fingerprint.json``) or ``--overwrite`` replaces it;
``--resume --extend`` trains a finished run for more rounds (``--set training.rounds=...``)
or more seeds. On a terminal, a progress bar per algorithm and seed; otherwise one line per
round; ``--quiet``: only the final table.
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
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="N|S1,S2,...",
        help="run every algorithm on N seeds (seed, seed+1, ...) or on the listed seeds; "
        "results.json then holds per-seed values, means and 95%% intervals (config key: seeds)",
    )
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


def seeds_override(text: str | None) -> list[str]:
    """``--seeds 3`` -> ``["seeds=3"]``; ``--seeds 0,4`` -> ``["seeds=[0, 4]"]``."""
    if text is None:
        return []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if "," in text:  # an explicit list: its first is the run's seed, whatever the file says
        return ["seed=", f"seeds=[{', '.join(parts)}]"]
    return [f"seeds={text.strip()}"]


def round_line(event: dict) -> str:
    """One round's line: algorithm, seed, round, loss, time and (when evaluated) metrics."""
    line = (
        f"[{event['algorithm']:>9} s{event.get('seed', 0)}] round {event['round']:>3}/"
        f"{event['of']}  loss {event['train_loss']:.4f}  {event['seconds']:6.2f} s"
    )
    if "mean_global" in event:
        line += (
            f"  global {event['mean_global']:.3f}  personalized {event['mean_personalized']:.3f}"
        )
    if "secure" in event:
        ring = event["secure"]
        line += f"  ring {ring.get('bytes', 0) / 1e6:.1f} MB"
        if ring.get("clipped"):
            line += (
                f"  CLIPPED {ring['clipped']} values (largest excess {ring['clip_excess']:.3g}, "
                f"error bound {ring['error_bound']:.3g})"
            )
    return line


class Progress:
    """Shows a run's progress: the only place runs are printed.

    On a terminal, a rich progress bar per (algorithm, seed) and the events above it;
    elsewhere (logs, pipes) one plain line per round; nothing with ``quiet``.
    """

    def __init__(self, quiet: bool = False, bars: bool | None = None):
        self.quiet = quiet
        self.bars = sys.stdout.isatty() if bars is None else bars
        self._progress = None
        self._task = None

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind = event["event"]
        if kind == "data":
            sizes = ", ".join(
                f"{n} ({a} train / {v} val / {b} test)"
                for n, a, v, b in zip(
                    event["clients"],
                    event["n_train"],
                    event["n_val"],
                    event["n_test"],
                    strict=True,
                )
            )
            self._print(f"data (seed {event['seed']}): {event['task']}, {sizes}")
        elif kind == "trial_done":
            score = event["score"]
            shown = "diverged" if event["status"] == "diverged" else f"{score:.4f}"
            self._print(f"tune {event['algorithm']}: {event['values']} -> validation {shown}")
        elif kind == "resume":
            self._print(
                f"{event['algorithm']} (seed {event['seed']}): resuming after round "
                f"{event['round']}"
            )
        elif kind == "start":
            self._start(event)
        elif kind == "round":
            self._round(event)
        elif kind == "diverged":
            self.stop()
            self._print(f"DIVERGED: {event['message']}")
        elif kind == "done":
            self.stop()

    def _start(self, event: dict) -> None:
        title = f"{event['algorithm']} seed {event['seed']}"
        if not self.bars:
            self._print(f"\n== {title}: {event['rounds']} rounds, {event['execution']} execution")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self._progress = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self._progress.start()
        self._task = self._progress.add_task(
            title, total=event["rounds"], completed=event["from_round"], info=""
        )

    def _round(self, event: dict) -> None:
        if self._progress is None:
            self._print(round_line(event))
            return
        info = f"loss {event['train_loss']:.4f}"
        if "mean_global" in event:
            info += f"  global {event['mean_global']:.3f}  pers. {event['mean_personalized']:.3f}"
        self._progress.update(self._task, completed=event["round"], info=info)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, flush=True)


def main(args: argparse.Namespace) -> int:
    from pppml_jax.experiments.config import ConfigError, load_config
    from pppml_jax.experiments.report import comparison_table, diverged_lines, per_client_table
    from pppml_jax.experiments.runner import run_experiment

    try:
        config = load_config(args.config, [*args.overrides, *seeds_override(args.seeds)])
    except ConfigError as err:
        print(f"pppml run: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / config.name)
    start = time.perf_counter()
    progress = Progress(args.quiet)
    try:
        results = run_experiment(
            config,
            out,
            callback=progress,
            resume=args.resume,
            overwrite=args.overwrite,
            extend=args.extend,
        )
    except (ConfigError, ValueError, FileNotFoundError) as err:
        progress.stop()
        # bad input (config, data, options): a clear message, not a deep traceback
        if args.debug:
            raise
        print(f"pppml run: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    seeds = results["seeds"]
    over = f" (mean ± 95% CI over seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    print(f"\nTest {results['metric']} per client after the last round{over}:\n")
    print(per_client_table(results))
    table = comparison_table(results)
    if table:
        print("\nPaired differences (* : the 95% interval excludes zero):\n")
        print(table)
    for line in diverged_lines(results):
        print(line)
    print(f"\nwrote {', '.join(results['files'])} to {out}/ in {time.perf_counter() - start:.0f} s")
    return 0
