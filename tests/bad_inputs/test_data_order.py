"""Every dataset comes in a fixed, documented, class-mixed order (issue 15, part 0).

A split sorted by class makes ``x[:n]`` one class: a model that always answers "airplane"
scores 100% on the first 1,000 CIFAR-10 test images of a class-sorted archive. These tests pin
the order to its documented definition (SHA-256 of salt + file name, recomputed here from the
archives' member names) and check that no cache of another version can bring the old order back.
"""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from tfcompress.data import (
    CACHE_VERSION, ORDER_SALT, balanced_indices, class_labels, find_dataset_dir, load,
    mixed_order, random_indices,
)
from tfcompress.data import loaders
from tfcompress.data.loaders import CIFAR10_CLASSES


@pytest.fixture(scope="module")
def splits():
    return {name: load(name) for name in ("mnist", "cifar10", "fsdd")}


@pytest.mark.parametrize("name", ["mnist", "cifar10", "fsdd"])
@pytest.mark.parametrize("split", [0, 1], ids=["train", "test"])
def test_first_1000_examples_hold_every_class(splits, name, split):
    _, y = splits[name][split]
    first = np.bincount(y[:1000], minlength=10)
    # Every class, and none starved: a class-sorted split has 0 of 9 classes here.
    assert first.min() >= 0.5 * min(1000, len(y)) / 10, (name, split, first.tolist())
    assert len(np.unique(y[:100])) == 10, (name, split, y[:100])


def _reference_labels(keys, label_of):
    """The documented order, recomputed without the loader: sort by SHA-256(salt/key)."""
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{ORDER_SALT}/{k}".encode()).digest())
    return np.array([label_of(k) for k in ranked], np.uint8)


def test_fsdd_order_is_the_documented_permutation(splits):
    folder, fileset = find_dataset_dir("fsdd")
    assert fileset == ("fsdd-recordings.tar.gz",)
    with tarfile.open(folder / fileset[0]) as tar:
        names = [m.name.split("/")[-1] for m in tar if m.name.endswith(".wav")]
    (_, y), (_, yt) = splits["fsdd"]
    train = [n for n in names if int(n[:-4].split("_")[2]) > 4]
    test = [n for n in names if int(n[:-4].split("_")[2]) <= 4]
    np.testing.assert_array_equal(y, _reference_labels(train, lambda n: int(n[0])))
    np.testing.assert_array_equal(yt, _reference_labels(test, lambda n: int(n[0])))
    # Speakers are mixed too: the archive is stored speaker by speaker.
    speakers = [n.split("_")[1] for n in
                sorted(test, key=lambda k: hashlib.sha256(f"{ORDER_SALT}/{k}".encode()).digest())]
    assert len(set(speakers[:30])) == 6


def test_cifar10_order_is_the_documented_permutation(splits):
    folder, fileset = find_dataset_dir("cifar10")
    if fileset != ("cifar10-jpg.tar.gz",):
        pytest.skip("only the JPEG archive is reordered; the official batches keep their order")
    with tarfile.open(folder / fileset[0]) as tar:
        paths = ["/".join(m.name.split("/")[-3:]) for m in tar if m.name.endswith(".jpg")]
    (_, y), (_, yt) = splits["cifar10"]
    for split, labels in (("train", y), ("test", yt)):
        keys = [p for p in paths if p.startswith(split + "/")]
        np.testing.assert_array_equal(
            labels, _reference_labels(keys, lambda k: CIFAR10_CLASSES.index(k.split("/")[1])))


def test_order_is_the_same_on_every_machine(splits):
    """A snapshot: these labels follow from the file names alone (no RNG, no file order)."""
    assert splits["cifar10"][1][1][:20].tolist() == [2, 1, 2, 1, 6, 7, 9, 5, 5, 0,
                                                     9, 7, 5, 5, 0, 6, 0, 8, 1, 9]
    assert splits["fsdd"][1][1][:20].tolist() == [1, 2, 1, 5, 0, 1, 1, 2, 1, 1,
                                                  5, 1, 2, 5, 8, 6, 3, 3, 9, 2]
    # MNIST keeps the official order of the IDX files (already class-mixed).
    assert splits["mnist"][0][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert splits["mnist"][1][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mixed_order_ignores_the_order_files_are_read_in():
    keys = [f"train/{c}/{i:04d}.jpg" for c in CIFAR10_CLASSES for i in range(30)]
    shuffled = list(np.random.default_rng(0).permutation(keys))
    a = [keys[i] for i in mixed_order(keys)]
    b = [shuffled[i] for i in mixed_order(shuffled)]
    assert a == b and sorted(a) == sorted(keys)
    assert [keys[i] for i in mixed_order(keys, salt="other")] != a   # the salt is the seed


# ------------------------------------------------------------------- the versioned cache
def _tiny_cifar_archive(path, per_class):
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in per_class.items():
            for c, cls in enumerate(CIFAR10_CLASSES):       # stored class by class
                for i in range(n):
                    img = np.full((32, 32, 3), 20 * c, np.uint8) + rng.integers(0, 5, (32, 32, 3),
                                                                              dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    monkeypatch.delenv("TFCOMPRESS_DATA", raising=False)
    monkeypatch.setenv("TFCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loaders, "CIFAR10_SPLIT_SIZES", {"train": 30, "test": 20})
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    archive = tmp_path / "data" / "cifar10" / "cifar10-jpg.tar.gz"
    _tiny_cifar_archive(archive, {"train": 3, "test": 2})
    return tmp_path / "data", archive


def test_old_cache_never_gives_the_old_order(tiny_cifar):
    data_dir, archive = tiny_cifar
    stat = archive.stat()
    cache = loaders.cache_dir()
    cache.mkdir(parents=True)
    sorted_y = np.repeat(np.arange(10, dtype=np.uint8), 3)
    old = dict(x_train=np.zeros((30, 32, 32, 3), np.uint8), y_train=sorted_y,
               x_test=np.zeros((20, 32, 32, 3), np.uint8),
               y_test=np.repeat(np.arange(10, dtype=np.uint8), 2))
    # The file name tfcompress 0.1.0 wrote (class order), and a current name of version 1.
    np.savez(cache / f"cifar10-cifar10-jpg-{stat.st_size}-{int(stat.st_mtime)}.npz", **old)
    path = loaders.cifar10_cache_path(archive)
    assert f"-v{CACHE_VERSION}-" in path.name
    np.savez(path, cache_version=np.int64(CACHE_VERSION - 1), **old)

    (x, y), (xt, yt) = load("cifar10", data_dir=data_dir)
    keys = [f"train/{c}/{i:04d}.jpg" for c in CIFAR10_CLASSES for i in range(3)]
    np.testing.assert_array_equal(y, sorted_y[mixed_order(keys)])
    assert not np.array_equal(y, sorted_y) and x.max() > 0        # decoded, not the stale file
    # The stale file was replaced by one of this version, which the next load reads.
    with np.load(path) as d:
        assert int(d["cache_version"]) == CACHE_VERSION
        np.testing.assert_array_equal(d["y_train"], y)
        fresh = {k: d[k] for k in d.files}
    fresh["y_test"] = fresh["y_test"][::-1].copy()             # a marker only the cache has
    np.savez(path, **fresh)
    _, (_, yt2) = load("cifar10", data_dir=data_dir)
    np.testing.assert_array_equal(yt2, yt[::-1])


def test_broken_cache_is_rebuilt(tiny_cifar):
    data_dir, archive = tiny_cifar
    path = loaders.cifar10_cache_path(archive)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not a zip")
    (_, y), _ = load("cifar10", data_dir=data_dir)
    assert np.bincount(y).tolist() == [3] * 10
    with np.load(path) as d:
        assert int(d["cache_version"]) == CACHE_VERSION


# ---------------------------------------------------------------------- subsets (--limit)
def test_balanced_indices_equal_counts_on_real_data(splits):
    _, (_, yt) = splits["mnist"]
    idx = balanced_indices(yt, 1000)
    assert len(idx) == 1000 and np.all(np.diff(idx) > 0)
    assert np.bincount(yt[idx]).tolist() == [100] * 10
    # Within each class: the first examples of the split's order.
    for c in range(10):
        np.testing.assert_array_equal(idx[yt[idx] == c], np.flatnonzero(yt == c)[:100])


def test_balanced_indices_water_fills_small_classes():
    y = np.repeat(np.arange(4), [2, 50, 50, 50])
    counts = np.bincount(y[balanced_indices(y, 20)], minlength=4)
    assert counts.tolist() == [2, 6, 6, 6]
    assert len(balanced_indices(y, 10**6)) == len(y)
    onehot = np.eye(4)[y]
    np.testing.assert_array_equal(balanced_indices(onehot, 20), balanced_indices(y, 20))


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_subset_sizes_must_be_positive_ints(n):
    with pytest.raises(ValueError, match="positive int"):
        balanced_indices([0, 1, 2], n)
    with pytest.raises(ValueError, match="positive int"):
        random_indices(10, n)


def test_balanced_indices_refuses_non_labels():
    assert class_labels(np.array([0.5, 1.5])) is None
    assert class_labels(np.array([[1.0], [0.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="class labels"):
        balanced_indices(np.array([0.5, 1.5, 2.5]), 2)


def test_random_indices_seeded_and_sorted():
    a, b = random_indices(1000, 50, seed=3), random_indices(1000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, random_indices(1000, 50, seed=4))
    assert random_indices(1000, 50, seed=3).tolist() == sorted(
        np.random.RandomState(3).permutation(1000)[:50].tolist())
