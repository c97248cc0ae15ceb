"""``pppml attack CONFIG --out DIR``: the iDLG privacy evaluation, its JSON metrics and figures."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.cli._args import add_set_argument
from pppml_jax.experiments.jsonable import jsonable

VIEW_COLUMNS = (
    ("plain", "FedAvg\ngradient"),
    ("relay", "relay\n(ciphertext)"),
    ("next_client", "next client\n(masked sum)"),
    ("aggregate", "aggregate\n(n clients)"),
    ("aggregate_minus_own", "aggregate\nminus own"),
    ("two_party_leak", "ring of 2\nleak"),
    ("relay_plus_hospital", "relay + 1 hosp.\n(pairwise masks)"),
    ("colluding_neighbours", "2 neighbours\n(pairwise masks)"),
    ("relay_plus_hospital_no_pairwise", "relay + 1 hosp.\n(no masks)"),
    ("colluding_neighbours_no_pairwise", "2 neighbours\n(no masks)"),
)


def register(subparsers) -> None:
    """Adds the ``attack`` sub-command to the ``pppml`` parser."""
    parser = subparsers.add_parser(
        "attack",
        help="run the iDLG privacy evaluation and write metrics.json and PNG grids",
        description="Attacks plain FedAvg gradients and every party's view of PPPML-HMI's "
        "secure aggregation with iDLG (configs/attack.yaml).",
    )
    parser.add_argument("config", help="a YAML config file, e.g. configs/attack.yaml")
    parser.add_argument("--out", default="runs/attack", help="output directory")
    add_set_argument(
        parser,
        dest="overrides",
        help="override a config value by dotted key, e.g. --set reference.images=4",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    parser.set_defaults(func=main)


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(table: list[dict[str, Any]]) -> str:
    """The results table as Markdown (one row per attacked view)."""
    lines = [
        "| view | n | label acc. | PSNR median (min to max) dB | SSIM median "
        "| noise floor PSNR / SSIM | beats floor |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table:
        acc = row.get("label_accuracy")
        lines.append(
            f"| {row['view']} | {row['n']} | {'-' if acc is None else f'{100 * acc:.0f}%'} | "
            f"{_fmt(row['psnr_median'])} ({_fmt(row['psnr_min'])} to {_fmt(row['psnr_max'])}) | "
            f"{_fmt(row['ssim_median'], 3)} | {_fmt(row.get('floor_psnr_median', float('nan')))}"
            f" / {_fmt(row.get('floor_ssim_median', float('nan')), 3)} | "
            f"{_fmt(100 * row.get('above_floor', float('nan')), 0)}% |"
        )
    return "\n".join(lines)


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.clip(np.asarray(image)[..., 0], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=6)


def draw_views_grid(rows: list[dict[str, Any]], path: Path) -> bool:
    """One row per trial: the victim's image, each view's reconstruction, the others' images."""
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(k, t) for k, t in VIEW_COLUMNS if k in rows[0]["recs"]]
    n_others = len(rows[0]["others"])
    cols = 1 + len(columns) + n_others
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.25 * cols, 1.45 * len(rows) + 0.4),
                             squeeze=False)  # fmt: skip
    for r, row in enumerate(rows):
        _show(axes[r, 0], row["truth"], "victim (truth)" if r == 0 else None)
        for c, (key, title) in enumerate(columns, start=1):
            image, record = row["recs"][key]
            _show(axes[r, c], image, title if r == 0 else None)
            axes[r, c].set_xlabel(f"{record['psnr']:.1f} dB, {record['ssim']:.2f}", fontsize=6)
        for j, other in enumerate(row["others"], start=1 + len(columns)):
            _show(axes[r, j], other, f"client {j - len(columns)}\n(truth)" if r == 0 else None)
    fig.suptitle("iDLG against each party's view (PSNR, SSIM vs the victim)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def draw_reference_grid(figures: dict[str, Any], path: Path, *, per_row: int = 10) -> bool:
    """Pairs of rows per dataset (truth above, reconstruction below), local updates last."""
    blocks = [(f"{name}: gradient", items) for name, items in figures.get("reference", {}).items()]
    if figures.get("local_update"):
        blocks.append(("local update", figures["local_update"]))
    blocks = [(name, items[:per_row]) for name, items in blocks if items]
    if not blocks:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(items) for _, items in blocks)
    fig, axes = plt.subplots(2 * len(blocks), cols, figsize=(1.1 * cols, 2.4 * len(blocks)),
                             squeeze=False)  # fmt: skip
    for ax in axes.ravel():
        ax.axis("off")
    for b, (name, items) in enumerate(blocks):
        for c, (truth, rec, record) in enumerate(items):
            _show(axes[2 * b, c], truth, f"label {record['true_label']}")
            _show(axes[2 * b + 1, c], rec, f"{record['psnr']:.1f} dB")
            axes[2 * b, c].axis("on")
            axes[2 * b + 1, c].axis("on")
        axes[2 * b, 0].set_ylabel(f"{name}\ntruth", fontsize=6)
        axes[2 * b + 1, 0].set_ylabel("iDLG", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


class Progress:
    """Prints one line per attacked image (the CLI is the only layer that prints)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        if event["event"] == "section":
            print(f"== {event['section']} ({elapsed:.0f} s)", flush=True)
            return
        where = event.get("dataset") or event.get("view") or ""
        index = event.get("index", event.get("trial"))
        print(
            f"[{event['section']}] {where} #{index}: label {event['label']}/{event['true_label']}"
            f"  PSNR {event['psnr']:6.1f} dB  SSIM {event['ssim']:.3f}"
            f"  ({event['iterations']} it, {elapsed:.0f} s)",
            flush=True,
        )


def main(args: argparse.Namespace) -> int:
    """Runs the evaluation of ``args.config`` and writes ``args.out``; returns an exit code."""
    from pppml_jax.experiments.config_attack import load_attack_config
    from pppml_jax.experiments.privacy import evaluate

    try:
        config = load_attack_config(args.config, args.overrides)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        evaluation = evaluate(config, progress=Progress(args.quiet))
    except ValueError as err:
        print(f"pppml attack: {err}", file=sys.stderr)
        return 2
    results = evaluation.results
    files = ["metrics.json", "table.md"]
    if draw_views_grid(evaluation.figures.get("views", []), out / "views.png"):
        files.append("views.png")
    if draw_reference_grid(evaluation.figures, out / "reference.png"):
        files.append("reference.png")
    results["files"] = files
    text = json.dumps(jsonable(results), indent=1, allow_nan=False)
    (out / "metrics.json").write_text(text + "\n")
    table = markdown_table(results["table"])
    (out / "table.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {', '.join(files)} to {out}/ in {results['seconds']['total']:.0f} s")
    return 0
