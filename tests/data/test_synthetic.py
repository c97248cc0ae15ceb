"""The embedded synthetic federation: contents, determinism, and real client heterogeneity."""

import numpy as np
import pytest

from pppml_jax.data import DeviceProfile, load_federation, synthetic_federation, synthetic_pools


@pytest.fixture(scope="module")
def quickstart():
    return load_federation("synthetic_chest_ct", task="segmentation", profiles="quickstart", seed=0)


def test_quickstart_federation_contents(quickstart):
    fed = quickstart
    assert (fed.task, fed.num_classes, fed.image_shape) == ("segmentation", 2, (64, 64, 3))
    assert len(fed.clients) == 4 and len(set(fed.client_names)) == 4
    totals = [sum(c.num_examples().values()) for c in fed.clients]
    assert all(60 <= t <= 120 for t in totals) and len(set(totals)) > 1  # unequal sizes
    for client in fed.clients:
        for split in ("train", "val", "test"):
            data = client.split(split)
            assert data["image"].dtype == np.float32 and data["mask"].dtype == np.int32
            assert data["label"].dtype == np.int32
            assert set(np.unique(data["mask"])) <= {0, 1}
            np.testing.assert_array_equal(
                data["label"], data["mask"].reshape(len(data["mask"]), -1).max(1)
            )
            assert len(data["label"]) > 0
        seen = [set(client.patients[s]) for s in ("train", "val", "test")]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
        # the segmentation cohort is infected, with mild to severe extent
        fractions = [client.split(s)["mask"].mean() for s in ("train", "val", "test")]
        assert min(fractions) > 0.005
        assert client.train["label"].sum() >= len(client.train["label"]) // 2
    extents = [c.split(s)["mask"].mean() for c in fed.clients for s in ("train", "test")]
    assert max(extents) > 2 * min(extents)


def test_generation_is_deterministic_and_per_client(quickstart):
    again = synthetic_federation(task="segmentation", profiles="quickstart", seed=0)
    for a, b in zip(quickstart.clients, again.clients, strict=True):
        np.testing.assert_array_equal(a.train["image"], b.train["image"])
    small = {"image_size": 32, "depth": 12, "slices_per_patient": 2}
    two = [DeviceProfile(label="x", num_patients=3, sharpen=1.0), DeviceProfile(label="y")]
    seed0, seed1 = (
        synthetic_pools(profiles=two, **small),
        synthetic_pools(profiles=two, seed=1, **small),
    )
    assert not np.array_equal(seed0[0].arrays["image"], seed1[0].arrays["image"])
    # A client's data depend only on its own profile and index, not on the other clients.
    alone = synthetic_pools(profiles=two[:1], **small)
    np.testing.assert_array_equal(seed0[0].arrays["image"], alone[0].arrays["image"])


def features(images):
    """An independent device fingerprint: dark-pixel level and high-frequency energy."""
    centre = images[..., 1]
    flat = np.sort(centre.reshape(len(centre), -1), axis=1)
    dark = flat[:, : flat.shape[1] // 10].mean(axis=1)
    diff = np.diff(centre, axis=1).reshape(len(centre), -1).std(axis=1)
    return np.stack([dark, np.log(diff)], axis=1)


def nearest_centroid_accuracy(fed):
    """Train a nearest-centroid 'which device?' classifier on train, score it on test."""
    train = [features(c.train["image"]) for c in fed.clients]
    mean = np.concatenate(train).mean(0)
    scale = np.concatenate(train).std(0) + 1e-9
    centroids = np.stack([((f - mean) / scale).mean(0) for f in train])
    correct = total = 0
    for index, client in enumerate(fed.clients):
        test = (features(client.test["image"]) - mean) / scale
        guess = np.argmin(((test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
        correct += int((guess == index).sum())
        total += len(test)
    return correct / total


def test_clients_really_differ_in_distribution(quickstart):
    assert nearest_centroid_accuracy(quickstart) > 0.95
    control = synthetic_federation(task="segmentation", profiles="identical", seed=0)
    assert nearest_centroid_accuracy(control) < 0.5  # chance is 0.25 with four equal devices


def test_classification_volumes_with_paper_thickness():
    profiles = [DeviceProfile(label=f"c{k}", num_patients=6, slice_thickness=k) for k in (1, 5)]
    fed = synthetic_federation(task="classification", profiles=profiles, image_size=16, depth=20)
    assert fed.task == "classification" and fed.image_shape == (20, 16, 16, 1)
    thick = fed.clients[1].train["image"]
    # 20 thin slices in blocks of 5 -> 4 slices, zero-padded back to 20 (centred)
    occupied = np.abs(thick).reshape(len(thick), 20, -1).max(axis=(0, 2)) > 0
    np.testing.assert_array_equal(np.nonzero(occupied)[0], np.arange(8, 12))
    assert set(np.concatenate([c.train["label"] for c in fed.clients])) <= {0, 1}
    assert "mask" not in fed.clients[0].train
