"""TFDS builder ``synthetic_chest_ct``: the synthetic federation written as array_record.

It wraps :func:`pppml_jax.data.synthetic.synthetic_pools`, so reading it back gives exactly
the in-memory federation. Configs ``segmentation`` and ``classification`` are the defaults;
:func:`make_config` makes one for any generator options.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import tensorflow_datasets as tfds

from pppml_jax.data.builders._common import (
    classification_features,
    client_split,
    config_name,
    segmentation_features,
)
from pppml_jax.data.synthetic import resolve_options, synthetic_pools


@dataclasses.dataclass(eq=False)
class SyntheticChestCtConfig(tfds.core.BuilderConfig):
    """Generator options (see :func:`~pppml_jax.data.synthetic.synthetic_pools`).

    ``profiles_json`` is a preset name or a JSON list of profile dicts.
    """

    task: str = "segmentation"
    profiles_json: str = "quickstart"
    image_size: int = 64
    depth: int = 48
    slices_per_patient: int = 10
    seed: int = 0

    def profiles(self) -> Any:
        """The profiles argument of the generator."""
        if self.profiles_json.startswith("["):
            return json.loads(self.profiles_json)
        return self.profiles_json


def make_config(
    *,
    task: str = "segmentation",
    profiles: Any = "quickstart",
    image_size: int | None = None,
    depth: int | None = None,
    slices_per_patient: int | None = None,
    seed: int = 0,
) -> SyntheticChestCtConfig:
    """A config for these generator options, named by their hash."""
    image_size, depth, slices_per_patient = resolve_options(
        task, image_size, depth, slices_per_patient
    )
    if not isinstance(profiles, str):
        profiles = json.dumps(
            [p if isinstance(p, dict) else dataclasses.asdict(p) for p in profiles], sort_keys=True
        )
    options = {
        "task": task,
        "profiles_json": profiles,
        "image_size": image_size,
        "depth": depth,
        "slices_per_patient": slices_per_patient,
        "seed": int(seed),
    }
    return SyntheticChestCtConfig(name=config_name(task, options), **options)


class SyntheticChestCt(tfds.core.GeneratorBasedBuilder):
    """Synthetic chest CT with infection lesions, one split per simulated device (client)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 - TFDS class attribute
    BUILDER_CONFIGS = [  # noqa: RUF012 - TFDS class attribute
        SyntheticChestCtConfig(name="segmentation", task="segmentation"),
        SyntheticChestCtConfig(
            name="classification",
            task="classification",
            profiles_json="paper_thickness",
            image_size=32,
            depth=40,
            slices_per_patient=1,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if config.task == "segmentation":
            features = segmentation_features(config.image_size)
        else:
            features = classification_features(
                (config.depth, config.image_size, config.image_size, 1)
            )
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic chest-CT phantoms imaged by simulated CT devices (pppml-jax).",
            features=features,
            metadata=tfds.core.MetadataDict(),
        )

    def _pools(self):
        config = self.builder_config
        return synthetic_pools(
            task=config.task,
            profiles=config.profiles(),
            image_size=config.image_size,
            depth=config.depth,
            slices_per_patient=config.slices_per_patient,
            seed=config.seed,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        pools = self._pools()
        self.info.metadata["clients"] = [
            {"name": pool.name, "profile": dict(pool.profile)} for pool in pools
        ]
        return {client_split(i): self._generate_examples(pool) for i, pool in enumerate(pools)}

    def _generate_examples(self, pool):
        segmentation = "mask" in pool.arrays
        for i in range(len(pool.patient)):
            example = {
                "image": pool.arrays["image"][i],
                "label": int(pool.arrays["label"][i]),
                "patient": str(pool.patient[i]),
                "position": int(pool.position[i]),
            }
            if segmentation:
                example["mask"] = pool.arrays["mask"][i]
            yield f"{pool.patient[i]}/{pool.position[i]}", example
