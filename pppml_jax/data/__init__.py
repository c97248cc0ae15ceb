"""Medical data: the synthetic chest-CT federation, simulated CT devices, TFDS builders, real CT.

The entry point is :func:`load_federation`::

    import pppml_jax as pj
    fed = pj.data.load_federation("synthetic_chest_ct", task="segmentation", seed=0)
    fed.task, fed.num_classes            # "segmentation", 2
    [c.name for c in fed.clients]        # one per simulated hospital / device
    fed.split("train")                   # list of dicts of arrays, one per client

TFDS is imported only by the loaders that build data sets (not by the in-memory synthetic path).
"""

from pppml_jax.data._ops import window_hu
from pppml_jax.data.devices import PRESETS, DeviceProfile, acquire, acquire_images
from pppml_jax.data.loading import LOADERS, load_federation
from pppml_jax.data.phantom import INFECTION_THRESHOLD, Phantom, chest_phantom
from pppml_jax.data.splits import SplitSpec, split_pool
from pppml_jax.data.synthetic import synthetic_federation, synthetic_pools
from pppml_jax.data.types import ClientData, ClientPool, FederatedDataset

__all__ = [
    "INFECTION_THRESHOLD",
    "LOADERS",
    "PRESETS",
    "ClientData",
    "ClientPool",
    "DeviceProfile",
    "FederatedDataset",
    "Phantom",
    "SplitSpec",
    "acquire",
    "acquire_images",
    "chest_phantom",
    "load_federation",
    "split_pool",
    "synthetic_federation",
    "synthetic_pools",
    "window_hu",
]
