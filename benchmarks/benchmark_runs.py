"""The runs behind EXPERIMENTS.md: the benchmark tasks, the two sweeps and the secure costs.

Every run is one ``pppml run CONFIG --out DIR [--set ...]``; beside its results.json this
script writes ``run.json`` (the exact command, machine, start and end time, exit status), which
benchmarks/experiments_report.py prints next to each table. Nothing here looks at test
results: the sweep values are fixed below, before any run.

Run directories (checkpoints, figures, event files) are large and not kept in git. So that
EXPERIMENTS.md can be rebuilt and checked from the repository alone, each finished run's
results.json and run.json (up to about 1 MB) are also copied to ``--archive``
(``make benchmark`` passes the tracked benchmarks/experiments/), together with plan.json; the
report reads that folder.

The sweeps answer "when does federating pay" on the segmentation federation
(configs/benchmark/seg_ct_small.yaml, its algorithms and validation search), changing one knob
through ``--set data.options.profiles=[...]``:

- ``examples``: patients per hospital (10 slices each, 60% of them for training), the same for
  every hospital: 3 (scarce, where local training should lose) to 24 (plentiful); the devices
  are the "quickstart" preset's.
- ``shift``: strength s of the device shift: every device property interpolated between an
  ideal scanner (s = 0: all four hospitals identical, 1.25 mm, 20 HU noise, standard kernel,
  no calibration error) and the "quickstart" preset's devices (s = 1, the strongest profiles);
  the hospitals' sizes are the preset's.

    python benchmarks/benchmark_runs.py --list               # the commands, nothing run
    python benchmarks/benchmark_runs.py --run --only tasks   # or sweeps, costs, all (default)
    python benchmarks/benchmark_runs.py --run --set training.rounds=1 --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pppml_jax.data.devices import PRESETS, DeviceProfile  # noqa: E402

PPPML = str(Path(sys.executable).with_name("pppml"))
TASKS = {
    # label: (config, what)
    "seg_ct_small": ("configs/benchmark/seg_ct_small.yaml", "task (a), 2-core variant"),
    "seg_ct": ("configs/benchmark/seg_ct.yaml", "task (a), full (GPU or overnight)"),
    "cls3d_small": ("configs/benchmark/cls3d_small.yaml", "task (b), 2-core variant"),
    "cls3d": ("configs/benchmark/cls3d.yaml", "task (b), full (GPU)"),
    "real_ct_cls": ("configs/benchmark/real_ct_cls.yaml", "task (c)"),
}
COSTS = {"costs_secure": ("configs/benchmark/costs_secure.yaml", "costs per secure backend")}
SWEEP_CONFIG = "configs/benchmark/seg_ct_small.yaml"
EXAMPLES = (3, 6, 12, 24)
SHIFTS = (0.0, 0.25, 0.5, 1.0)
IDEAL = DeviceProfile(label="ideal", noise_hu=20.0)


def examples_profiles(patients: int) -> list[dict]:
    """The quickstart devices, each hospital with ``patients`` patients."""
    return [_profile(dataclasses.replace(p, num_patients=patients)) for p in PRESETS["quickstart"]]


def shift_profiles(strength: float) -> list[dict]:
    """Every quickstart device moved ``strength`` of the way from :data:`IDEAL` (0) to itself
    (1); sizes and prevalences are the preset's; names are derived (the preset's names state
    the preset's devices)."""
    out = []
    for p in PRESETS["quickstart"]:

        def mix(field, p=p):
            return (1 - strength) * getattr(IDEAL, field) + strength * getattr(p, field)

        matrix = None
        if p.matrix is not None:
            matrix = round((1 - strength) * 64 + strength * p.matrix)  # 64: the output size
        profile = dataclasses.replace(
            p,
            name="",
            slice_thickness=max(1, round(mix("slice_thickness"))),
            matrix=matrix,
            **{f: mix(f) for f in ("noise_hu", "blur_sigma", "sharpen", "hu_scale", "hu_offset")},
        )
        out.append(_profile(profile))
    return out


def _profile(profile: DeviceProfile) -> dict:
    return {k: v for k, v in dataclasses.asdict(profile).items() if v is not None}


def planned_runs(out: Path, extra: list[str]) -> list[dict]:
    """Every run: ``{"name", "group", "config", "out", "sets", "sweep"}``."""
    runs = []
    for name, (config, what) in {**TASKS, **COSTS}.items():
        group = "costs" if name in COSTS else "tasks"
        runs.append(dict(name=name, group=group, what=what, config=config, sets=list(extra),
                         out=str(out / name), sweep=None))  # fmt: skip
    for n in EXAMPLES:
        sets = [f"data.options.profiles={json.dumps(examples_profiles(n))}", *extra]
        runs.append(dict(name=f"sweep_examples/patients-{n}", group="sweeps", config=SWEEP_CONFIG,
                         what=f"{n} patients per hospital", sets=sets,
                         out=str(out / "sweep_examples" / f"patients-{n}"),
                         sweep={"name": "examples", "value": n}))  # fmt: skip
    for s in SHIFTS:
        sets = [f"data.options.profiles={json.dumps(shift_profiles(s))}", *extra]
        runs.append(dict(name=f"sweep_shift/strength-{s:g}", group="sweeps", config=SWEEP_CONFIG,
                         what=f"device shift strength {s:g}", sets=sets,
                         out=str(out / "sweep_shift" / f"strength-{s:g}"),
                         sweep={"name": "shift", "value": s}))  # fmt: skip
    return runs


def command(run: dict) -> list[str]:
    argv = ["pppml", "run", run["config"], "--out", run["out"], "--quiet", "--overwrite"]
    for item in run["sets"]:
        argv += ["--set", item]
    return argv


def machine() -> dict:
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def execute(run: dict, timeout: float | None) -> int:
    """Runs one ``pppml run`` and writes ``run.json`` beside its outputs."""
    argv = command(run)
    out = Path(run["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        rc = subprocess.run([PPPML, *argv[1:]], cwd=ROOT, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    record = {
        "name": run["name"],
        "what": run["what"],
        "command": shlex.join(argv),
        "sweep": run["sweep"],
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "returncode": rc,
        **machine(),
    }
    try:
        import jax

        record["accelerator"] = jax.default_backend()
    except Exception:
        record["accelerator"] = "unknown"
    (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    return rc


def archive_run(run: dict, archive: Path, returncode: int) -> None:
    """Copies a successful run's results.json and run.json to ``archive / name``.

    A run that failed or timed out (``returncode`` not 0; a results.json left in its folder
    may be an earlier run's) leaves the archived pair of an earlier run untouched and adds its
    run.json as ``failed-run.json``, so a crash never erases evidence and a table never shows
    one run's numbers with another run's date.
    """
    out, dest = Path(run["out"]), archive / run["name"]
    dest.mkdir(parents=True, exist_ok=True)
    if returncode == 0 and (out / "results.json").is_file():
        shutil.copyfile(out / "results.json", dest / "results.json")
        shutil.copyfile(out / "run.json", dest / "run.json")
        (dest / "failed-run.json").unlink(missing_ok=True)
    elif (out / "run.json").is_file():
        shutil.copyfile(out / "run.json", dest / "failed-run.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/benchmark", help="root of the run directories")
    parser.add_argument("--only", default="all", choices=("all", "tasks", "sweeps", "costs"))
    parser.add_argument("--skip", nargs="*", default=[], help="run names to leave out")
    parser.add_argument("--set", action="append", default=[], help="extra KEY=VALUE overrides")
    parser.add_argument("--run", action="store_true", help="run (default: list the commands)")
    parser.add_argument("--list", action="store_true", help="list the commands (the default)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--archive",
        default="",
        help="where each run's results.json and run.json are copied (`make benchmark`: the "
        "tracked benchmarks/experiments); default: nowhere, so trial runs never replace them",
    )
    args = parser.parse_args(argv)
    runs = [
        r
        for r in planned_runs(Path(args.out), args.set)
        if (args.only == "all" or r["group"] == args.only) and r["name"] not in args.skip
    ]
    (Path(args.out)).mkdir(parents=True, exist_ok=True)
    plan = [{**r, "command": shlex.join(command(r))} for r in planned_runs(Path(args.out), [])]
    (Path(args.out) / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    archive = Path(args.archive) if args.archive and args.run else None
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)
        (archive / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    failed = 0
    for run in runs:
        print(shlex.join(command(run)), flush=True)
        if args.run:
            rc = execute(run, args.timeout)
            failed += rc != 0
            if archive is not None:
                archive_run(run, archive, rc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
