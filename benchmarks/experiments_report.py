"""Writes EXPERIMENTS.md from the benchmark runs' results.json and run.json files.

Reads every run that benchmarks/benchmark_runs.py plans (``<runs>/plan.json``, or the plan it
would make); a run without results.json is listed as not run, with the command that produces
it. Every table states its command, seeds, machine and date (from run.json). The statements
about the paper's claims are computed from the seed-paired differences of the test metric,
with fixed rules written below; nothing is chosen by looking at the numbers.

    python benchmarks/experiments_report.py --out EXPERIMENTS.md   # from benchmarks/experiments/
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pppml_jax.experiments.stats import format_interval, paired_difference  # noqa: E402

CLAIM_TASKS = ("seg_ct", "seg_ct_small", "cls3d", "cls3d_small", "real_ct_cls")
PERFEDAVG, FEDAVG, FEDAVG_FT, PPPML = "perfedavg-fo", "fedavg", "fedavg-ft", "pppml"
SWEEP_LABELS = ("local", "fedavg", "fedavg-ft", "perfedavg-fo", "pppml")


def load(out: Path) -> tuple[dict | None, dict]:
    results = out / "results.json"
    meta = out / "run.json"
    res = json.loads(results.read_text()) if results.is_file() else None
    return res, json.loads(meta.read_text()) if meta.is_file() else {}


def provenance(run: dict, res: dict, meta: dict) -> list[str]:
    cmd = meta.get("command", run["command"])
    machine = "unknown machine (no run.json)"
    if meta:
        machine = (
            f"{meta.get('machine')} with {meta.get('cpus')} CPUs, {meta.get('system')}, "
            f"accelerator {meta.get('accelerator', 'unknown')}"
        )
    when = meta.get("started", "unknown date")
    wall = meta.get("wall_seconds", res.get("seconds"))
    wall_text = f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "unknown"
    cfg, tune = res.get("config", {}), res.get("config", {}).get("tune")
    training = cfg.get("training", {})
    search = "no search (fixed values)"
    if tune:
        search = (
            f"{tune.get('method')} search on validation, {tune.get('budget')} trials of "
            f"{tune.get('rounds') or training.get('rounds')} rounds per algorithm"
        )
    return [
        f"- command: `{cmd}`",
        f"- {training.get('rounds')} rounds of {training.get('local_steps')} local steps "
        f"(batch {training.get('batch_size')}) for every algorithm; {search}",
        f"- seeds: {', '.join(str(s) for s in res['seeds'])}; machine: {machine}",
        f"- date: {when}; wall time: {wall_text}",
    ]


def per_seed(res: dict, label: str, metric: str) -> dict:
    return res["runs"][label]["stats"][f"mean_{metric}"]["per_seed"]


def diff(res: dict, a: str, b: str, metric: str = "personalized") -> dict | None:
    if a not in res["runs"] or b not in res["runs"]:
        return None
    return paired_difference(per_seed(res, a, metric), per_seed(res, b, metric))


def fmt_diff(d: dict | None) -> str:
    if d is None or d.get("mean") is None:
        return "n/a"
    ci = d.get("ci")
    text = f"{d['mean']:+.3f}"
    if ci is not None:
        text += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
    return text + ("*" if d.get("excludes_zero") else "")


def round_costs(run: dict) -> tuple[float | None, float | None]:
    """Mean seconds per round and mean secure bytes per round over every seed's rounds."""
    seconds, nbytes = [], []
    for record in run.get("per_seed", {}).values():
        for r in record.get("rounds") or []:
            seconds.append(r["seconds"])
            if r.get("secure"):
                nbytes.append(r["secure"]["bytes"])
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return mean(seconds), mean(nbytes)


def task_table(res: dict) -> list[str]:
    tuning = res.get("tuning", {})
    lines = [
        f"| algorithm | global {res['metric']} | personalized {res['metric']} | "
        "s / round | secure bytes / round | tuned on validation | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in res["runs"].items():
        stats = run["stats"]
        secs, nbytes = round_costs(run)
        choice = tuning.get("algorithms", {}).get(label, {})
        chosen, score = choice.get("choice"), choice.get("best_score")
        tuned = "—" if chosen is None else json.dumps(chosen).replace('"', "")
        if score is not None:
            tuned += f" (val {score:.3f})"
        lines.append(
            f"| {label} | {format_interval(stats['mean_global'])} | "
            f"{format_interval(stats['mean_personalized'])} | "
            f"{'n/a' if secs is None else f'{secs:.2f}'} | "
            f"{'— (no ring)' if nbytes is None else f'{nbytes / 1e6:.2f} MB'} | {tuned} | "
            f"{', '.join(str(s) for s in run.get('diverged', [])) or '—'} |"
        )
    return lines


def claims(res: dict) -> list[str]:
    """The paper's two claims on one task, by fixed rules on seed-paired test differences."""
    out = []
    fedavg = res["runs"].get(FEDAVG)
    for base in (FEDAVG, FEDAVG_FT):
        d = diff(res, PERFEDAVG, base)
        if d is None or d.get("mean") is None:
            continue
        ref = res["runs"][base]["stats"]["mean_personalized"]["mean"]
        rel = 100 * d["mean"] / ref if ref else float("nan")
        if d.get("ci") is None:
            verdict = "undetermined (one seed)"
        elif d["ci"][0] > 0:
            verdict = "Per-FedAvg is better (interval above zero)"
        elif d["ci"][1] < 0:
            verdict = "Per-FedAvg is worse (interval below zero): the claim does not hold"
        else:
            verdict = "no difference shown (interval includes zero): the claim is not supported"
        what = "FedAvg's global model" if base == FEDAVG else "FedAvg + fine-tuning"
        out.append(
            f"- personalized Per-FedAvg (fo) − {what}: {fmt_diff(d)} "
            f"({rel:+.1f}% of {ref:.3f}); paper: about +5%. {verdict}."
        )
    d = diff(res, PPPML, PERFEDAVG)
    if d is not None and d.get("mean") is not None:
        bound = None
        for record in res["runs"][PPPML].get("per_seed", {}).values():
            for r in record.get("rounds") or []:
                if r.get("secure") and r["secure"].get("error_bound") is not None:
                    bound = max(bound or 0.0, r["secure"]["error_bound"])
        largest = max(abs(x) for x in d["differences"]) if d["differences"] else None
        equal = d.get("ci") is not None and d["ci"][0] <= 0 <= d["ci"][1]
        out.append(
            f"- pppml − Per-FedAvg (fo), personalized: {fmt_diff(d)}, largest per-seed "
            f"|difference| {largest:.2g}; the ring's per-round aggregation error bound "
            f"{bound if bound is not None else 'n/a'}. "
            + (
                "Equal within the interval, as the paper says (up to quantisation)."
                if equal
                else "Not equal within the interval: the claim does not hold here."
            )
        )
    if fedavg is None:
        out.append("- FedAvg was not in this run.")
    return out


def sweep_table(rows: list[tuple[Any, dict, dict]], name: str) -> list[str]:
    head = "patients per hospital" if name == "examples" else "shift strength"
    labels = [lab for lab in SWEEP_LABELS if any(lab in r["runs"] for _, r, _ in rows)]
    lines = [
        f"| {head} | " + " | ".join(f"{lab} (pers.)" for lab in labels)
        + " | fedavg-ft − local | perfedavg-fo − local |",
        "|---" * (len(labels) + 3) + "|",
    ]  # fmt: skip
    for value, res, _ in rows:
        cells = [
            format_interval(res["runs"][lab]["stats"]["mean_personalized"])
            if lab in res["runs"]
            else "n/a"
            for lab in labels
        ]
        lines.append(
            f"| {value} | " + " | ".join(cells) + f" | {fmt_diff(diff(res, FEDAVG_FT, 'local'))}"
            f" | {fmt_diff(diff(res, PERFEDAVG, 'local'))} |"
        )
    return lines


def plot_sweep(rows: list[tuple[Any, dict, dict]], name: str, path: Path) -> None:
    """Personalized test metric (mean and 95% interval over seeds) against the swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r[0])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label in SWEEP_LABELS:
        points = [
            (float(value), res["runs"][label]["stats"]["mean_personalized"])
            for value, res, _ in rows
            if label in res["runs"]
        ]
        points = [(x, st) for x, st in points if st.get("mean") is not None]
        if not points:
            continue
        xs = [x for x, _ in points]
        means = [st["mean"] for _, st in points]
        half = [st.get("half_width") or 0.0 for _, st in points]  # symmetric Student-t
        ax.errorbar(xs, means, yerr=half, marker="o", capsize=3, label=label, alpha=0.85)
    ax.set_xlabel("patients per hospital" if name == "examples" else "device shift strength")
    if name == "examples":
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(v) for v, _, _ in rows], [str(v) for v, _, _ in rows])
    metric = rows[0][1].get("metric", "metric") if rows else "metric"
    ax.set_ylabel(f"personalized test {metric} (mean, 95% CI)")
    ax.set_title(f"When does federating pay: {name}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(runs_dir: Path, figures: Path | None = None, relative_to: Path | None = None) -> str:
    """EXPERIMENTS.md's text; with ``figures`` also one PNG per sweep that has run.

    ``relative_to``: the directory the markdown lives in (figure links are relative to it).
    """
    from benchmark_runs import command, planned_runs

    plan_file = runs_dir / "plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
    else:
        plan = [{**r, "command": shlex.join(command(r))} for r in planned_runs(runs_dir, [])]
    for run in plan:  # where the runs are now, whatever root the plan was made under
        run["dir"] = runs_dir / Path(run["out"]).relative_to(Path(plan[0]["out"]).parent)
    lines = [
        "# EXPERIMENTS: personalized federated learning under device shift",
        "",
        "Generated by `make benchmark` (benchmarks/benchmark_runs.py runs, then "
        "benchmarks/experiments_report.py writes this file from each run's results.json and "
        "run.json). Cells are `mean ± half width of the 95% Student-t interval over seeds` of "
        "the test metric (Dice for segmentation, accuracy for classification); differences are "
        "paired by seed, `[low, high]` is their 95% interval, `*` marks an interval that "
        "excludes zero. Hyper-parameters were chosen on the validation split only "
        "(docs/experiments.md). Seconds per round are wall time of one round's training (one "
        "process, the machine named); bytes per round are those the secure ring sent (measured "
        "in the run); algorithms without a ring send their update in the clear and record no "
        "bytes.",
        "",
    ]
    not_run: list[dict] = []
    done_tasks: dict[str, dict] = {}
    sweeps: dict[str, list] = {"examples": [], "shift": []}
    for group, title in (("tasks", "Tasks"), ("costs", "Costs per secure backend")):
        lines += [f"## {title}", ""]
        for run in [r for r in plan if r["group"] == group]:
            res, meta = load(run["dir"])
            if res is None:
                not_run.append(run)
                continue
            done_tasks[run["name"]] = res
            lines += [f"### {run['name']}: {run['what']}", ""]
            lines += [*provenance(run, res, meta), "", *task_table(res), ""]
    for run in [r for r in plan if r["group"] == "sweeps"]:
        res, meta = load(run["dir"])
        if res is None:
            not_run.append(run)
        else:
            meta.setdefault("command", run["command"])
            sweeps[run["sweep"]["name"]].append((run["sweep"]["value"], res, meta))
    lines += ["## When does federating pay", ""]
    for name, rows in sweeps.items():
        if rows:
            lines += [f"### Sweep: {name}", ""]
            for value, res, meta in rows:
                run = {"command": "?"}
                lines += [f"{value}:", *provenance(run, res, meta)]
            lines += ["", *sweep_table(sorted(rows, key=lambda r: r[0]), name), ""]
            if figures is not None:
                path = figures / f"sweep_{name}.png"
                plot_sweep(rows, name, path)
                link = path.resolve()
                if relative_to is not None:
                    link = Path(os.path.relpath(link, relative_to.resolve()))
                lines += [f"![{name} sweep]({link.as_posix()})", ""]
        else:
            lines += [f"### Sweep: {name}", "", "Not run yet (commands below).", ""]
    lines += ["## The paper's claims on our data", ""]
    lines += [
        "Rules fixed before the runs: a claimed improvement holds when the seed-paired "
        "interval lies above zero; equality holds when the interval contains zero. The full "
        "task runs take precedence over their 2-core variants.",
        "",
    ]
    stated = False
    for task in CLAIM_TASKS:
        if task in done_tasks:
            lines += [f"### {task}", "", *claims(done_tasks[task]), ""]
            stated = True
    if not stated:
        lines += ["No task has been run yet: nothing can be said.", ""]
    lines += ["## Not run yet", ""]
    if not_run:
        lines += [
            "Each with its command; `make benchmark BENCH_ONLY=tasks` (or `sweeps`, `costs`) "
            "runs a group, `python benchmarks/benchmark_runs.py --list` prints them all.",
            "",
        ]
    if not not_run:
        lines += ["Everything planned has run.", ""]
    for run in not_run:
        lines += [f"- {run['name']} ({run['what']}): `{run['command']}`"]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        default="benchmarks/experiments",
        help="root of the run directories (default: the tracked archive benchmark_runs.py fills)",
    )
    parser.add_argument("--out", default="EXPERIMENTS.md")
    parser.add_argument("--preamble", default=None, help="a markdown file put first")
    parser.add_argument(
        "--figures", default="docs/figures/experiments", help="where the sweep figures go"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    text = report(Path(args.runs), Path(args.figures), relative_to=out.parent)
    if args.preamble:
        text = Path(args.preamble).read_text().rstrip() + "\n\n" + text
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
