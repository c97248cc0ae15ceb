"""What the TFDS builders share: feature specs, config naming, building and reading back.

Every builder writes ``array_record`` files with one TFDS split per client (``client00``,
``client01``, ...) and the clients' names and profiles in ``info.metadata["clients"]``. Each
example carries its ``patient`` id and ``position`` (slice index), so that splits by patient
are made when loading, from a seed, without rebuilding. Reading uses ``tfds.data_source``
(random access, numpy): TensorFlow is never imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from pppml_jax.data.types import ClientPool


def client_split(index: int) -> str:
    """TFDS split name of client ``index``."""
    return f"client{index:02d}"


def segmentation_features(size: int) -> tfds.features.FeaturesDict:
    """2D segmentation examples: 3-channel image, binary mask, slice label, patient, position."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.float32, encoding="zlib"),
            "mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.Scalar(dtype=np.int32),
            "patient": tfds.features.Text(),
            "position": tfds.features.Scalar(dtype=np.int32),
        }
    )


def classification_features(shape: Sequence[int]) -> tfds.features.FeaturesDict:
    """Classification examples: image of ``shape`` (2D or 3D, channels last), label, patient."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=tuple(shape), dtype=np.float32, encoding="zlib"),
            "label": tfds.features.Scalar(dtype=np.int32),
            "patient": tfds.features.Text(),
            "position": tfds.features.Scalar(dtype=np.int32),
        }
    )


def config_name(prefix: str, options: Mapping[str, Any]) -> str:
    """A config name unique to ``options``: ``<prefix>_<10 hex digits of their hash>``."""
    text = json.dumps(options, sort_keys=True, default=str)
    return f"{prefix}_{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def config_fields(config_cls: type) -> set[str]:
    """Names of the fields ``config_cls`` adds to ``tfds.core.BuilderConfig``."""
    inherited = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    return {f.name for f in dataclasses.fields(config_cls)} - inherited


def check_options(dataset: str, config_cls: type, options: Mapping[str, Any]) -> None:
    """Refuses ``options`` that are not :func:`config_fields` of ``config_cls``.

    Raises:
      ValueError: naming ``dataset``, the unknown options and the valid ones.
    """
    known = config_fields(config_cls)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {dataset} option(s) {unknown}; valid: {sorted(known)}")


def build(
    builder_cls: type[tfds.core.GeneratorBasedBuilder],
    config: tfds.core.BuilderConfig,
    *,
    data_dir: str | os.PathLike,
    manual_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
) -> str:
    """Builds (or reuses) ``builder_cls`` with ``config``; returns ``"<name>/<config>"``."""
    builder = builder_cls(config=config, data_dir=str(data_dir), file_format="array_record")
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD
        if rebuild
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(manual_dir) if manual_dir is not None else None, download_mode=mode
    )
    builder.download_and_prepare(download_config=download_config)
    return f"{builder.name}/{config.name}"


def read_pools(
    name: str, *, data_dir: str | os.PathLike
) -> tuple[list[ClientPool], Mapping[str, Any]]:
    """Reads a built data set back as one :class:`ClientPool` per client, in client order.

    Args:
      name: ``"<dataset>/<config>"`` as returned by :func:`build`.
      data_dir: the TFDS data directory it was built in.

    Returns:
      ``(pools, metadata)``, ``metadata`` being the data set's ``info.metadata`` (``"clients"``
      and what else the builder recorded, e.g. ``"classes"``).
    """
    metadata = tfds.builder(name, data_dir=str(data_dir)).info.metadata
    clients = metadata["clients"]
    sources = tfds.data_source(name, data_dir=str(data_dir))
    pools = []
    for index, client in enumerate(clients):
        source = sources[client_split(index)]
        records = [source[i] for i in range(len(source))]
        if not records:
            raise ValueError(f"{name}: client {client['name']!r} has no examples")
        arrays = {
            key: np.stack([np.asarray(r[key]) for r in records])
            for key in ("image", "label", "mask")
            if key in records[0]
        }
        patient = np.array([_text(r["patient"]) for r in records], dtype=object)
        position = np.array([int(r["position"]) for r in records], dtype=np.int32)
        pools.append(
            ClientPool(
                name=client["name"],
                profile=client.get("profile", {}),
                arrays=arrays,
                patient=patient,
                position=position,
            )
        )
    return pools, metadata


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
