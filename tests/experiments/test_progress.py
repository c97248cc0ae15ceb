"""``pppml run`` progress: rich bars on a terminal, plain lines elsewhere, silence with --quiet."""

from pppml_jax.cli.run import Progress

EVENTS = [
    {
        "event": "data",
        "seed": 0,
        "task": "segmentation",
        "clients": ["a"],
        "n_train": [4],
        "n_val": [1],
        "n_test": [2],
        "seconds": 0.1,
    },
    {
        "event": "trial_done",
        "algorithm": "fedavg",
        "values": {"lr": 0.1},
        "status": "ok",
        "score": 0.5,
    },
    {
        "event": "start",
        "algorithm": "fedavg",
        "seed": 0,
        "rounds": 2,
        "execution": "loop",
        "from_round": 0,
    },
    {
        "event": "round",
        "algorithm": "fedavg",
        "seed": 0,
        "of": 2,
        "round": 1,
        "seconds": 1.0,
        "train_loss": 0.5,
    },
    {
        "event": "round",
        "algorithm": "fedavg",
        "seed": 0,
        "of": 2,
        "round": 2,
        "seconds": 1.0,
        "train_loss": 0.4,
        "mean_global": 0.3,
        "mean_personalized": 0.35,
    },
    {"event": "done", "algorithm": "fedavg", "seed": 0, "status": "ok"},
    {
        "event": "start",
        "algorithm": "local",
        "seed": 0,
        "rounds": 2,
        "execution": "loop",
        "from_round": 0,
    },
    {"event": "diverged", "algorithm": "local", "seed": 0, "message": "local (seed 0) diverged"},
]


def test_plain_lines_name_algorithm_seed_and_round(capsys):
    progress = Progress(bars=False)
    for event in EVENTS:
        progress(event)
    out = capsys.readouterr().out
    assert "[   fedavg s0] round   2/2  loss 0.4000" in out and "personalized 0.350" in out
    assert "tune fedavg: {'lr': 0.1} -> validation 0.5000" in out
    assert "DIVERGED: local (seed 0) diverged" in out


def test_bars_and_quiet(capsys):
    progress = Progress(bars=True)
    for event in EVENTS:
        progress(event)
    assert progress._progress is None  # every bar stopped
    assert "DIVERGED" in capsys.readouterr().out
    quiet = Progress(quiet=True, bars=True)
    for event in EVENTS:
        quiet(event)
    assert capsys.readouterr().out == ""
