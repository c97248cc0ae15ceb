"""A run's Markdown summary and PNG figures: metric per round, per-client bars, example images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"local": "#7f7f7f", "fedavg": "#1f77b4", "perfedavg": "#2ca02c", "pppml": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def per_client_table(results: dict[str, Any]) -> str:
    """Markdown: one row per client, a global / personalized column pair per algorithm."""
    algorithms = list(results["runs"])
    names = [c["name"] for c in results["clients"]]
    head = (
        "| client | n_train | n_test | "
        + " | ".join(f"{a} global | {a} pers." for a in algorithms)
        + " |"
    )
    rule = "|" + "---|" * (3 + 2 * len(algorithms))
    rows = [head, rule]

    def fmt(v):
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    for name in names:
        first = results["runs"][algorithms[0]]["final"]["per_client"][name]
        cells = [name, str(first["n_train"]), str(first["n_test"])]
        for a in algorithms:
            pc = results["runs"][a]["final"]["per_client"][name]
            cells += [fmt(pc["global"]), fmt(pc["personalized"])]
        rows.append("| " + " | ".join(cells) + " |")
    means = ["**mean**", "", ""]
    for a in algorithms:
        final = results["runs"][a]["final"]
        means += [f"**{fmt(final['mean_global'])}**", f"**{fmt(final['mean_personalized'])}**"]
    rows.append("| " + " | ".join(means) + " |")
    return "\n".join(rows)


def plot_curves(results: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for algorithm, run in results["runs"].items():
        rounds = [r for r in run["rounds"] if "mean_global" in r]
        x = [r["round"] for r in rounds]
        color = COLORS.get(algorithm)
        ax.plot(
            x, [r["mean_global"] for r in rounds], "-", color=color, label=f"{algorithm} global"
        )
        if algorithm != "local":
            ax.plot(
                x,
                [r["mean_personalized"] for r in rounds],
                "--",
                color=color,
                label=f"{algorithm} personalized",
            )
    ax.set_xlabel("round")
    ax.set_ylabel(f"mean test {results['metric']} over clients")
    ax.set_title(results.get("name", ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_clients(results: dict[str, Any], path: Path) -> None:
    plt = _plt()
    algorithms = list(results["runs"])
    names = [c["name"] for c in results["clients"]]
    width = 0.8 / len(algorithms)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(names)), 4.0))
    for j, algorithm in enumerate(algorithms):
        per_client = results["runs"][algorithm]["final"]["per_client"]
        values = [per_client[n]["personalized"] for n in names]
        values = [np.nan if v is None else v for v in values]
        ax.bar(
            np.arange(len(names)) + (j - (len(algorithms) - 1) / 2) * width,
            values,
            width,
            color=COLORS.get(algorithm),
            label=algorithm,
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel(f"test {results['metric']} (personalized; local: own model)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _display(image: np.ndarray) -> np.ndarray:
    """A 2D view of one example: the middle channel (and middle slice of a volume)."""
    image = np.asarray(image)
    if image.ndim == 4:  # [D, H, W, C]
        image = image[image.shape[0] // 2]
    return image[..., image.shape[-1] // 2]


def plot_examples(results: dict[str, Any], examples: dict[str, list], path: Path) -> bool:
    """One row per client: the image, the truth, then each algorithm's personalized prediction."""
    algorithms = [a for a in examples if examples[a]]
    if not algorithms:
        return False
    plt = _plt()
    clients = [e["client"] for e in examples[algorithms[0]]]
    segmentation = results["task"] == "segmentation"
    cols = 2 + len(algorithms) if segmentation else 1
    fig, axes = plt.subplots(
        len(clients), cols, figsize=(2.0 * cols, 2.0 * len(clients)), squeeze=False
    )
    for i, client in enumerate(clients):
        first = examples[algorithms[0]][i]
        image = _display(first["image"][0])
        axes[i, 0].imshow(image, cmap="gray")
        axes[i, 0].set_ylabel(client, fontsize=7)
        if segmentation:
            axes[i, 1].imshow(image, cmap="gray")
            axes[i, 1].contour(first["truth"][0], levels=[0.5], colors="yellow", linewidths=0.8)
            for j, algorithm in enumerate(algorithms):
                ex = examples[algorithm][i]
                ax = axes[i, 2 + j]
                ax.imshow(image, cmap="gray")
                ax.imshow(np.ma.masked_equal(ex["pred"][0], 0), cmap="autumn", alpha=0.5)
                ax.contour(ex["truth"][0], levels=[0.5], colors="yellow", linewidths=0.6)
                if i == 0:
                    ax.set_title(algorithm, fontsize=8)
            if i == 0:
                axes[i, 0].set_title("image", fontsize=8)
                axes[i, 1].set_title("truth", fontsize=8)
        else:
            preds = ", ".join(f"{a}: {int(examples[a][i]['pred'][0])}" for a in algorithms)
            axes[i, 0].set_title(f"label {int(first['truth'][0])}; {preds}", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: dict[str, Any], examples: dict[str, list], out_dir: Path) -> list[str]:
    """Writes summary.md and the figures into ``out_dir``; returns the file names written."""
    files = ["results.json"]
    plot_curves(results, out_dir / "metric_per_round.png")
    plot_clients(results, out_dir / "per_client.png")
    files += ["metric_per_round.png", "per_client.png"]
    if plot_examples(results, examples, out_dir / "examples.png"):
        files.append("examples.png")
    lines = [
        f"# {results.get('name', 'run')}: {results['task']}, metric {results['metric']}",
        "",
        "Test-split metric per client after the last round. *global*: the shared model (for "
        "`local`, the client's own model); *pers.*: after personalization on the client's "
        "training data (docs/method.md 1.1); test data never adapts a model.",
        "",
        per_client_table(results),
        "",
        "| algorithm | seconds (all rounds) | execution |",
        "|---|---|---|",
    ]
    for algorithm, run in results["runs"].items():
        lines.append(f"| {algorithm} | {run['seconds']:.1f} | {run['execution']} |")
    lines += [
        "",
        "![metric per round](metric_per_round.png)",
        "",
        "![per client](per_client.png)",
        "",
    ]
    if "examples.png" in files:
        lines += ["![examples](examples.png)", ""]
    (out_dir / "summary.md").write_text("\n".join(lines))
    files.append("summary.md")
    return files
