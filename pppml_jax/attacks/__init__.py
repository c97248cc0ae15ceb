"""Gradient-inversion attacks (iDLG) and every party's view of secure aggregation, pure JAX.

The attacks are pure functions of ``(loss_fn, params, observed)``::

    import pppml_jax as pj
    label = pj.attacks.infer_label(grads)           # iDLG's sign rule on the output layer
    rec = pj.attacks.idlg(loss_fn, params, grads, input_shape=(32, 32, 1), num_classes=2)
    rec.image, rec.label
    rec = pj.attacks.idlg_update(loss_fn, params, theta0_minus_thetaK, input_shape=(32, 32, 1),
                                 num_classes=2, local_steps=5, lr=0.1)

Host-side modules, imported on demand: ``pppml_jax.attacks.views`` (every party's view of a
secure-aggregation round; it pulls in the secure package), ``pppml_jax.attacks.crops`` (32x32
crops of CT slices) and ``pppml_jax.attacks.scoring`` (scores and the noise floor). The package
imports no data set and no model; the experiment behind ``pppml attack`` that wires them in is
:mod:`pppml_jax.experiments.privacy`.
See ``docs/privacy.md``.
"""

from pppml_jax.attacks.idlg import INITS, Reconstruction, idlg, idlg_update, match_input
from pppml_jax.attacks.label import class_scores, infer_label, last_layer_kernel
from pppml_jax.attacks.lbfgs import SOLVERS, LbfgsResult, minimize_lbfgs, minimize_optax_lbfgs
from pppml_jax.attacks.objective import DISTANCES, gradient_distance, total_variation
from pppml_jax.attacks.observations import Gradient, LocalUpdate

__all__ = [
    "DISTANCES",
    "INITS",
    "SOLVERS",
    "Gradient",
    "LbfgsResult",
    "LocalUpdate",
    "Reconstruction",
    "class_scores",
    "gradient_distance",
    "idlg",
    "idlg_update",
    "infer_label",
    "last_layer_kernel",
    "match_input",
    "minimize_lbfgs",
    "minimize_optax_lbfgs",
    "total_variation",
]
