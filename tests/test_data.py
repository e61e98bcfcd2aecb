import gzip
import io
import os
import shutil
import tarfile
import wave

import numpy as np
import pytest

from tfcompress.data import find_dataset_dir, load
from tfcompress.data.loaders import CIFAR10_CLASSES
from tfcompress.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No TFCOMPRESS_DATA, an empty private cache: only data_dir can supply files."""
    monkeypatch.delenv("TFCOMPRESS_DATA", raising=False)
    monkeypatch.setenv("TFCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_mnist_real_files(mnist):
    (x, y), (xt, yt) = mnist
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and xt.dtype == np.uint8
    assert y.dtype == np.uint8 and yt.dtype == np.uint8
    assert np.bincount(y).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(yt).tolist() == MNIST_TEST_COUNTS
    assert x.max() == 255 and x.min() == 0


def test_cifar10_real_files_and_cache():
    # The user cache, shared with the other CIFAR-10 tests (one decode per CI run); the cache
    # logic itself is tested on a small archive in tests/bad_inputs/test_data_order.py.
    from tfcompress.data.loaders import cifar10_cache_path

    (x, y), (xt, yt) = load("cifar10")
    assert x.shape == (50000, 32, 32, 3) and x.dtype == np.uint8
    assert xt.shape == (10000, 32, 32, 3) and yt.dtype == np.uint8
    assert np.bincount(y).tolist() == [5000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
    folder, fileset = find_dataset_dir("cifar10")
    if fileset != ("cifar-10-batches-py",):
        assert cifar10_cache_path(folder / fileset[0]).is_file()
    (x2, y2), (xt2, yt2) = load("cifar10")        # second load comes from the cache
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(yt2, yt)
    # Images are real photos, not blank: per-class mean colours differ.
    means = np.stack([x[y == c].mean(axis=(0, 1, 2)) for c in range(10)])
    assert means.std(axis=0).min() > 1.0
    assert len(CIFAR10_CLASSES) == 10


def test_fsdd_real_files():
    (x, y), (xt, yt) = load("fsdd")
    assert x.shape == (2700, 8000) and x.dtype == np.float32
    assert xt.shape == (300, 8000) and yt.dtype == np.uint8
    assert np.bincount(y).tolist() == [270] * 10
    assert np.bincount(yt).tolist() == [30] * 10
    assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.1
    (xs, _), _ = load("fsdd", length=4000)
    np.testing.assert_array_equal(xs, x[:, :4000])


def test_unknown_dataset_names_valid_ones():
    with pytest.raises(DataError, match="Valid names: mnist, cifar10, fsdd"):
        load("imagenet")


def test_unknown_option():
    with pytest.raises(DataError, match="Unknown option"):
        load("mnist", length=3)
    with pytest.raises(DataError, match="positive number of samples"):
        load("fsdd", length=0)


def test_missing_data_dir(isolated):
    with pytest.raises(DataError, match="does not exist"):
        load("mnist", data_dir=isolated / "nope")


def test_not_found_lists_files_and_places(isolated):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load("mnist", data_dir=empty)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(empty) in msg
    assert "user cache" in msg and "TFCOMPRESS_DATA" in msg


_MNIST_SRC, _ = find_dataset_dir("mnist")   # the real files, found before any monkeypatching


def _copy_mnist(dst):
    src = _MNIST_SRC
    dst.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(src / f, dst / f)
    return dst


def test_data_dir_takes_precedence_and_subfolder_layout(isolated):
    mine = _copy_mnist(isolated / "mine" / "mnist")
    # Replace the test labels by a constant so we can tell which copy was read.
    with gzip.open(mine / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes([7]) * 10000)
    _, (_, yt) = load("mnist", data_dir=isolated / "mine")     # <root>/mnist/ layout
    assert set(yt.tolist()) == {7}
    _, (_, yt) = load("mnist", data_dir=mine)                  # files directly in the folder
    assert set(yt.tolist()) == {7}


def test_corrupt_gzip(isolated):
    d = _copy_mnist(isolated / "bad")
    data = (d / "train-images-idx3-ubyte.gz").read_bytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load("mnist", data_dir=d)


def test_wrong_magic_and_size(isolated):
    d = _copy_mnist(isolated / "bad")
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x09\x99" + (10).to_bytes(4, "big") + bytes(10))
    with pytest.raises(DataError, match="magic number"):
        load("mnist", data_dir=d)
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + (10000).to_bytes(4, "big") + bytes(10))
    with pytest.raises(DataError, match="header says"):
        load("mnist", data_dir=d)


def _wav_bytes(rate, samples):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())
    return buf.getvalue()


def test_fsdd_recordings_folder_and_bad_rate(isolated):
    rec = isolated / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    (rec / "3_alice_0.wav").write_bytes(_wav_bytes(8000, [16384] * 10))
    (rec / "5_alice_7.wav").write_bytes(_wav_bytes(8000, [-16384] * 20000))
    (x, y), (xt, yt) = load("fsdd", data_dir=isolated, length=100)
    assert y.tolist() == [5] and yt.tolist() == [3]
    assert xt[0, :10].tolist() == [0.5] * 10 and xt[0, 10:].tolist() == [0.0] * 90
    assert x[0].tolist() == [-0.5] * 100                       # cut to length
    (rec / "4_bob_1.wav").write_bytes(_wav_bytes(16000, [0] * 10))
    with pytest.raises(DataError, match="16000 Hz"):
        load("fsdd", data_dir=isolated)
    (rec / "4_bob_1.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(DataError, match="Corrupt WAV file .*4_bob_1.wav"):
        load("fsdd", data_dir=isolated)


def test_corrupt_cifar_archive(isolated):
    d = isolated / "cifar10"
    d.mkdir()
    (d / "cifar10-jpg.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(DataError, match="cifar10-jpg.tar.gz"):
        load("cifar10", data_dir=isolated)


def test_cifar_archive_with_wrong_layout(isolated):
    d = isolated / "cifar10"
    d.mkdir()
    with tarfile.open(d / "cifar10-jpg.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("train/unicorn/0001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError, match="unicorn"):
        load("cifar10", data_dir=isolated)


def test_env_var_is_used(isolated, monkeypatch):
    root = isolated / "envroot"
    _copy_mnist(root / "mnist")
    monkeypatch.setenv("TFCOMPRESS_DATA", str(root))
    folder, _ = find_dataset_dir("mnist")
    assert folder == root / "mnist"
    assert os.environ["TFCOMPRESS_DATA"] == str(root)
