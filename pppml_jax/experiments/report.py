"""A run's Markdown summary and PNG figures: metric per round, per-client bars, example images.

With several seeds, every number is "mean ± half width of the 95% Student-t interval" over
the seeds that finished, the per-round figure shows that interval as a band, and the
comparisons table marks with ``*`` the paired differences whose interval excludes zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pppml_jax.experiments.stats import format_interval, summarize

COLORS = {"local": "#7f7f7f", "fedavg": "#1f77b4", "perfedavg": "#2ca02c", "pppml": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cell(run: dict[str, Any], name: str | None, metric: str) -> str:
    """``mean ± CI`` of a client's (or, for ``name=None``, the mean's) final ``metric``."""
    stats = run.get("stats")
    if stats is None:  # a results.json of a single-seed version
        final = run["final"]
        value = final[f"mean_{metric}"] if name is None else final["per_client"][name][metric]
        return _fmt(value)
    summary = stats[f"mean_{metric}"] if name is None else stats["per_client"][name][metric]
    return format_interval(summary)


def _fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _count(v) -> str:
    return "n/a" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def per_client_table(results: dict[str, Any]) -> str:
    """Markdown: one row per client, a global / personalized column pair per algorithm; with
    several seeds each cell is "mean ± half width of the 95% interval"."""
    algorithms = list(results["runs"])
    names = [c["name"] for c in results["clients"]]
    head = (
        "| client | n_train | n_test | "
        + " | ".join(f"{a} global | {a} pers." for a in algorithms)
        + " |"
    )
    rule = "|" + "---|" * (3 + 2 * len(algorithms))
    rows = [head, rule]
    for name in names:
        counts = [results["runs"][a]["final"]["per_client"][name] for a in algorithms]
        first = next((c for c in counts if c["n_train"] is not None), counts[0])
        cells = [name, _count(first["n_train"]), _count(first["n_test"])]
        for a in algorithms:
            run = results["runs"][a]
            cells += [_cell(run, name, "global"), _cell(run, name, "personalized")]
        rows.append("| " + " | ".join(cells) + " |")
    means = ["**mean**", "", ""]
    for a in algorithms:
        run = results["runs"][a]
        means += [f"**{_cell(run, None, 'global')}**", f"**{_cell(run, None, 'personalized')}**"]
    rows.append("| " + " | ".join(means) + " |")
    return "\n".join(rows)


def comparison_table(results: dict[str, Any]) -> str:
    """Markdown: each pair's mean difference ``a - b`` (paired by seed) with its interval;
    ``*`` marks an interval that excludes zero. Empty without comparisons."""
    comparisons = results.get("comparisons") or []
    if not comparisons:
        return ""
    rows = [
        "| a − b | metric | mean difference ± 95% CI | seeds paired | CI excludes 0 |",
        "|---|---|---|---|---|",
    ]
    for c in comparisons:
        mark = {True: "**yes** *", False: "no", None: "n/a (one seed)"}[c["excludes_zero"]]
        rows.append(
            f"| {c['a']} − {c['b']} | {c['metric']} | {format_interval(c)} | {c['n']} | {mark} |"
        )
    return "\n".join(rows)


def diverged_lines(results: dict[str, Any]) -> list[str]:
    """One Markdown bullet per diverged (algorithm, seed), with the guard's message."""
    lines = []
    for label, run in results["runs"].items():
        for seed in run.get("diverged", []):
            why = run["per_seed"][str(seed)].get("divergence", {}).get("message", "")
            lines.append(f"- **{label}, seed {seed}: diverged** ({why})")
    return lines


def _band(run: dict[str, Any], key: str) -> tuple[list, list, list, list]:
    """Per evaluated round: x, mean, low and high of ``key`` over the finished seeds."""
    seeds = [s for s in run.get("per_seed", {}).values() if s.get("status") == "ok"]
    series = [[r for r in s["rounds"] if r.get(key) is not None] for s in seeds]
    x, mean, low, high = [], [], [], []
    for records in zip(*series, strict=False) if series else []:
        summary = summarize([r[key] for r in records])
        x.append(records[0]["round"])
        mean.append(summary["mean"])
        ci = summary["ci"] or [summary["mean"], summary["mean"]]
        low.append(ci[0])
        high.append(ci[1])
    return x, mean, low, high


def plot_curves(results: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for algorithm, run in results["runs"].items():
        color = COLORS.get(algorithm)
        kinds = [("mean_global", "-", "global")]
        if algorithm != "local":
            kinds.append(("mean_personalized", "--", "personalized"))
        for key, style, name in kinds:
            x, mean, low, high = _band(run, key)
            if not x:  # a results dict without per-seed rounds
                rounds = [r for r in run["rounds"] if r.get(key) is not None]
                x, mean = [r["round"] for r in rounds], [r[key] for r in rounds]
                low = high = mean
            line = ax.plot(x, mean, style, color=color, label=f"{algorithm} {name}")[0]
            if low is not high:
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("round")
    ax.set_ylabel(f"mean test {results['metric']} over clients")
    seeds = results.get("seeds") or []
    title = results.get("name", "")
    if len(seeds) > 1:
        title += f" ({len(seeds)} seeds; bands: 95% CI)"
    ax.set_title(title)
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
        stats = results["runs"][algorithm].get("stats", {}).get("per_client", {})
        errors = [stats.get(n, {}).get("personalized", {}).get("half_width") for n in names]
        errors = [0.0 if e is None else e for e in errors]
        ax.bar(
            np.arange(len(names)) + (j - (len(algorithms) - 1) / 2) * width,
            values,
            width,
            yerr=errors if any(errors) else None,  # the 95% interval over seeds
            capsize=2,
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
    seeds = results.get("seeds") or []
    lines = [
        f"# {results.get('name', 'run')}: {results['task']}, metric {results['metric']}",
        "",
        "Test-split metric per client after the last round. *global*: the shared model (for "
        "`local`, the client's own model); *pers.*: after personalization on the client's "
        "training data (docs/method.md 1.1); test data never adapts a model.",
        "",
    ]
    if len(seeds) > 1:
        lines += [
            f"Seeds {', '.join(map(str, seeds))}: each cell is the mean over the seeds that "
            "finished ± the half width of its 95% Student-t confidence interval.",
            "",
        ]
    lines += [per_client_table(results), ""]
    diverged = diverged_lines(results)
    if diverged:
        lines += ["Diverged runs (left out of the means):", "", *diverged, ""]
    table = comparison_table(results)
    if table:
        lines += [
            "Paired differences between algorithms (same seed: same data and initial model); "
            "`*`: the 95% interval excludes zero.",
            "",
            table,
            "",
        ]
    if results.get("tuning"):
        lines += [_tuning_table(results["tuning"]), ""]
    lines += ["| algorithm | seconds (all rounds, mean over seeds) | execution |", "|---|---|---|"]
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


def _tuning_table(tuning: dict[str, Any]) -> str:
    """Markdown: each algorithm's choice and its validation score (the search in tuning.json)."""
    rows = [
        f"Tuned on validation only ({tuning['method']} search, {tuning['budget']} trials per "
        f"algorithm, data seed {tuning['data_seed']}; {tuning['score']}):",
        "",
        "| algorithm | choice | validation score | trials diverged |",
        "|---|---|---|---|",
    ]
    for label, entry in tuning["algorithms"].items():
        diverged = sum(t["status"] == "diverged" for t in entry["trials"])
        choice = (
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in (entry["choice"] or {}).items()
            )
            or "(config's values)"
        )
        rows.append(f"| {label} | {choice} | {_fmt(entry['best_score'])} | {diverged} |")
    return "\n".join(rows)
