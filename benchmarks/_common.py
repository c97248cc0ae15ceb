"""Helpers shared by the benchmark scripts: machine description, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time


def machine() -> dict:
    """Platform facts to store beside every figure."""
    import jax

    return {
        "platform": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median(values) -> float:
    return float(statistics.median(values))


def emit_json(obj: dict) -> None:
    """Prints ``obj`` as one JSON line: the last line of a benchmark's output under --json."""
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=True))
