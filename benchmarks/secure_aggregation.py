"""Secure-aggregation benchmark: seconds, bytes per parameter and error for every backend.

For each backend, update size (default 10k, 100k and the paper's U-Net, ``pj.models.UNet2D``
with its own 1,942,594-parameter leaf shapes; other sizes scale those leaves) and ring size
(default 3 and 10 clients): seconds to encrypt (per client), per hop, to decrypt and end to
end, bytes per parameter on one ring link, the largest error against the float64 weighted
mean, and peak memory. ``--pairwise on off`` measures each plain / bfv configuration with
the pairwise masks of issue 12 on and off (default: the backend's default, on).
``paper-ckks`` is the published configuration (TenSEAL CKKS, N=8192, [31, 26 x 6, 31], scale
2**26, one ciphertext vector per layer) measured in the same run as the baseline. Each
configuration runs in its own process.

Usage::

    python benchmarks/secure_aggregation.py                 # full sizes (minutes)
    python benchmarks/secure_aggregation.py --params 2000 --clients 3 --json   # smoke test
    python benchmarks/secure_aggregation.py --backend bfv --params unet --clients 10 \
        --pairwise on off --json                             # the cost of pairwise masks

The same measurement is ``pppml bench secure``. Goals (issue 4): an exact backend aggregates
the 1.94M-parameter update of 10 clients with at most 20 bytes per parameter and at least 4x
faster than the paper's setting; concrete aggregates its largest update within 60 s and 8 GB;
(issue 12) pairwise masks cost at most 1.5x the ring's time and bytes. The measurement is the
public ``pj.secure.measure`` (one ``pj.secure.MeasureConfig`` per configuration).
"""

from __future__ import annotations

import argparse
import sys

from pppml_jax.cli.bench import add_secure_arguments, run_secure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_secure_arguments(parser)
    parser.set_defaults(concrete_sweep=["20k", "40k", "80k"])
    args = parser.parse_args(argv)
    return run_secure(args)


if __name__ == "__main__":
    sys.exit(main())
