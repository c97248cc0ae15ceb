"""results.json and metrics.json values: strict JSON from numpy scalars, arrays and NaN."""

import json

import numpy as np

from pppml_jax.experiments.jsonable import jsonable


def test_numpy_values_and_non_finite_floats_become_strict_json():
    value = {
        "nan64": np.float64("nan"),  # a float subclass: must not pass through as NaN
        "nan32": np.float32("nan"),
        "inf": float("-inf"),
        "half": np.float32(1.5),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "array": np.array([[1.0, np.nan]]),
        "pair": (1, 2.5),
        7: "int key",
    }
    out = jsonable(value)
    assert out == {
        "nan64": None,
        "nan32": None,
        "inf": None,
        "half": 1.5,
        "count": 3,
        "flag": True,
        "array": [[1.0, None]],
        "pair": [1, 2.5],
        "7": "int key",
    }
    assert type(out["count"]) is int and type(out["half"]) is float
    json.dumps(out, allow_nan=False)  # raises on any NaN left
