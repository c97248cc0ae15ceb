"""TFDS builders (array_record, read with ``tfds.data_source``; no TensorFlow needed).

Importing this package registers ``synthetic_chest_ct``, ``rad_chestct``, ``covid_ct_seg`` and
``image_folder`` with TFDS. Build and read them through :func:`pppml_jax.data.load_federation`,
or directly::

    from pppml_jax.data.builders import covid_ct_seg, _common
    from pppml_jax.data.paths import tfds_dir
    config = covid_ct_seg.make_config("/data/covid", axis="z", size=256)
    name = _common.build(covid_ct_seg.CovidCtSeg, config, data_dir=tfds_dir(),
                         manual_dir="/data/covid")
    source = tfds.data_source(name, data_dir=tfds_dir())["client00"]
"""

from pppml_jax.data.builders.covid_ct_seg import CovidCtSeg
from pppml_jax.data.builders.image_folder import ImageFolder
from pppml_jax.data.builders.rad_chestct import RadChestct
from pppml_jax.data.builders.synthetic_chest_ct import SyntheticChestCt

__all__ = ["CovidCtSeg", "ImageFolder", "RadChestct", "SyntheticChestCt"]
