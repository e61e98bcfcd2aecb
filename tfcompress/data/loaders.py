"""Loaders for the offline datasets (see :mod:`tfcompress.data`)."""

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tfcompress.errors import DataError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
FSDD_SAMPLE_RATE = 8000
CIFAR10_SPLIT_SIZES = {"train": 50000, "test": 10000}

# Example order (see the docstring of tfcompress.data): archives that store a dataset sorted
# by class or speaker are put in a fixed pseudo-random order, the order of the SHA-256 digests
# of ORDER_SALT + "/" + each file's name. It depends on nothing but the file names, so it is
# the same on every machine and with every numpy version.
ORDER_SALT = "tfcompress-order-v1"
# Version of the decoded-array cache. 1: tfcompress 0.1.0, CIFAR-10 from the JPEG archive in
# class order. 2: the fixed mixed order above. A cache of another version is never read.
CACHE_VERSION = 2

# For each dataset: the alternative file sets that can hold it (the first that is complete wins).
_MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MNIST_RAW = tuple(name[:-3] for name in _MNIST_GZ)
_FILESETS = {
    "mnist": (_MNIST_GZ, _MNIST_RAW, ("mnist.npz",)),
    "cifar10": (("cifar10-jpg.tar.gz",), ("cifar-10-batches-py",), ("cifar-10-python.tar.gz",)),
    "fsdd": (("fsdd-recordings.tar.gz",), ("recordings",)),
}
DATASETS = tuple(_FILESETS)


def cache_dir():
    """The user cache folder of tfcompress (created on demand by writers, not here)."""
    if os.environ.get("TFCOMPRESS_CACHE"):
        return Path(os.environ["TFCOMPRESS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tfcompress"


def _search_roots(data_dir):
    roots = []
    if data_dir is not None:
        roots.append(("data_dir argument", Path(data_dir).expanduser()))
    if os.environ.get("TFCOMPRESS_DATA"):
        roots.append(("TFCOMPRESS_DATA", Path(os.environ["TFCOMPRESS_DATA"]).expanduser()))
    roots.append(("user cache", cache_dir() / "datasets"))
    return roots


def _check_name(name):
    if not isinstance(name, str) or name.lower() not in _FILESETS:
        raise DataError(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}.")
    return name.lower()


def find_dataset_dir(name, data_dir=None):
    """Return ``(folder, fileset)`` for the first place that holds a complete copy of ``name``.

    Raises:
        DataError: unknown name, a ``data_dir`` that does not exist, or no complete file set
            anywhere (the message lists the files and every folder searched).
    """
    name = _check_name(name)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"data_dir {str(data_dir)!r} does not exist or is not a folder.")
    searched = []
    for label, root in _search_roots(data_dir):
        for folder in (root / name, root):
            searched.append(f"{folder} ({label})")
            for fileset in _FILESETS[name]:
                if all((folder / f).exists() for f in fileset):
                    return folder, fileset
    wanted = " or ".join("{" + ", ".join(fs) + "}" for fs in _FILESETS[name])
    raise DataError(
        f"Dataset {name!r} not found. Looked for {wanted} in: " + "; ".join(searched)
        + ". Pass data_dir=..., or set TFCOMPRESS_DATA to a folder holding "
        f"'{name}/' (this project's copy is in shared/data/)."
    )


def mixed_order(keys, salt=ORDER_SALT):
    """Indices that put ``keys`` in tfcompress's fixed pseudo-random order.

    Key ``k`` gets the rank of ``SHA-256(salt + "/" + k)`` among the digests of all keys (byte
    order). The result is a permutation that depends only on the keys and the salt: the same on
    every machine, whatever order the files were read in, and independent of numpy's random
    generators (whose streams may change between versions).

    Args:
        keys: file names (strings), e.g. ``"train/airplane/0001.jpg"``.
        salt: the seed of the permutation (default :data:`ORDER_SALT`).

    Returns:
        ``int64`` array ``p`` such that ``[keys[i] for i in p]`` is the mixed order.

    >>> mixed_order(["a", "b", "c"]).tolist()
    [2, 0, 1]
    """
    digests = [hashlib.sha256(f"{salt}/{k}".encode()).digest() for k in keys]
    return np.array(sorted(range(len(digests)), key=digests.__getitem__), np.int64)


def load(name, data_dir=None, **options):
    """Load a dataset as numpy arrays ``(x_train, y_train), (x_test, y_test)``.

    Every split comes in a fixed, class-mixed order, the same on every machine, so the first
    ``n`` examples are a fair sample (for a class-balanced subset of exactly ``n`` use
    :func:`tfcompress.data.balanced_indices`):

    - mnist: the official order of the IDX files, which is already class-mixed (the first
      1,000 training images hold 87-117 of each digit). Note that the first 5,000 test images
      come from NIST's SD-3 (cleaner, easier) and the last 5,000 from SD-1: report accuracy on
      the whole test split.
    - cifar10: from the official python batches, their official (random) order. From the JPEG
      archive (``cifar10-jpg.tar.gz``, stored class by class) the order of
      :func:`mixed_order` over the member paths ``"<split>/<class>/<file>.jpg"``.
    - fsdd: the order of :func:`mixed_order` over the file names
      ``"<digit>_<speaker>_<index>.wav"`` (the recordings are stored by speaker).

    Args:
        name: ``"mnist"``, ``"cifar10"`` or ``"fsdd"``.
        data_dir: folder to look in first (see the module docstring for the search order).
        **options: for ``"fsdd"``: ``length`` (samples, default 8000 = 1 s at 8 kHz).

    Returns:
        - mnist: ``uint8`` images ``(60000, 28, 28)`` / ``(10000, 28, 28)``, ``uint8`` labels.
        - cifar10: ``uint8`` images ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)``, ``uint8``
          labels in the order of ``CIFAR10_CLASSES``. The decoded arrays are cached as an
          ``.npz`` in the user cache after the first load of the JPEG archive.
        - fsdd: ``float32`` waveforms in [-1, 1] at 8 kHz, zero-padded or cut at the end to
          ``length`` samples, ``(2700, length)`` / ``(300, length)``, ``uint8`` digit labels;
          the official split (recording index 0-4 is test).

    Raises:
        DataError: unknown name or option, missing files, or a corrupt file (named).
    """
    name = _check_name(name)
    allowed = {"fsdd": {"length"}}.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise DataError(
            f"Unknown option(s) {sorted(unknown)} for dataset {name!r}; "
            f"valid: {sorted(allowed) or 'none'}."
        )
    folder, fileset = find_dataset_dir(name, data_dir)
    return _LOADERS[name](folder, fileset, **options)


# ---------------------------------------------------------------------------------- MNIST
def _read_maybe_gz(path):
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt or unreadable file {path}: {err}") from err


def _parse_idx(path, magic, header):
    raw = _read_maybe_gz(path)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(
            f"Corrupt IDX file {path}: expected magic number {magic} in a "
            f"{header}-byte header (got {len(raw)} bytes)."
        )
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range((header - 4) // 4)]
    count = int(np.prod(dims))
    if len(raw) != header + count:
        raise DataError(
            f"Corrupt IDX file {path}: header says {dims} ({count} bytes of data) but the file "
            f"holds {len(raw) - header}."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _load_mnist(folder, fileset):
    if fileset == ("mnist.npz",):
        path = folder / "mnist.npz"
        try:
            with np.load(path) as d:
                arrays = [d[k] for k in ("x_train", "y_train", "x_test", "y_test")]
        except (OSError, KeyError, ValueError, zlib.error) as err:
            raise DataError(f"Corrupt or unreadable file {path}: {err}") from err
    else:
        x_tr, y_tr, x_te, y_te = (folder / f for f in fileset)
        arrays = [_parse_idx(x_tr, 2051, 16), _parse_idx(y_tr, 2049, 8),
                  _parse_idx(x_te, 2051, 16), _parse_idx(y_te, 2049, 8)]
    x_train, y_train, x_test, y_test = (np.asarray(a, np.uint8) for a in arrays)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataError(
                f"MNIST {split} split in {folder} has images {x.shape} and labels {y.shape}; "
                "expected (N, 28, 28) and (N,)."
            )
    return (x_train, y_train), (x_test, y_test)


# ------------------------------------------------------------------------------- CIFAR-10
def _load_cifar10(folder, fileset):
    if fileset == ("cifar-10-batches-py",):
        return _cifar_from_pickles(folder / "cifar-10-batches-py")
    archive = folder / fileset[0]
    cached = cifar10_cache_path(archive)
    hit = _read_cache(cached)
    if hit is not None:
        return hit
    if fileset == ("cifar10-jpg.tar.gz",):
        result = _cifar_from_jpeg_tar(archive)
    else:
        result = _cifar_from_python_tar(archive)
    (x_train, y_train), (x_test, y_test) = result
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 cache_version=np.int64(CACHE_VERSION))
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the decode time next time
    return result


def cifar10_cache_path(archive):
    """Where the decoded arrays of a CIFAR-10 archive are cached.

    The name holds :data:`CACHE_VERSION` and the archive's name, size and modification time,
    so a cache written by another tfcompress version (another example order) or for another
    copy of the archive is never read.
    """
    archive = Path(archive)
    stat = archive.stat()
    stem = archive.name.split(".")[0]
    return cache_dir() / f"cifar10-v{CACHE_VERSION}-{stem}-{stat.st_size}-{int(stat.st_mtime)}.npz"


def _read_cache(path):
    """The cached splits, or None when absent, broken or of another :data:`CACHE_VERSION`."""
    if not path.exists():
        return None
    try:
        with np.load(path) as d:
            if "cache_version" not in d.files or int(d["cache_version"]) != CACHE_VERSION:
                return None  # rebuilt (and overwritten) from the archive
            return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])
    except (OSError, EOFError, KeyError, ValueError, zlib.error, zipfile.BadZipFile):
        path.unlink(missing_ok=True)  # a broken cache is rebuilt from the archive
        return None


def _cifar_from_jpeg_tar(archive):
    from PIL import Image

    images = {"train": [], "test": []}
    try:
        # One sequential pass: out-of-order reads of a .tar.gz decompress from the start.
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg")):
                    continue
                parts = Path(member.name).parts
                if len(parts) < 3 or parts[-3] not in images or parts[-2] not in CIFAR10_CLASSES:
                    raise DataError(
                        f"Unexpected member {member.name!r} in {archive}; expected "
                        "train|test/<class>/<n>.jpg."
                    )
                data = tar.extractfile(member).read()
                img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.uint8)
                if img.shape != (32, 32, 3):
                    raise DataError(f"{member.name} in {archive} is {img.shape}, not 32x32x3.")
                images[parts[-3]].append(("/".join(parts[-3:]), img))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt or unreadable archive {archive}: {err}") from err
    out = []
    for split, expected in CIFAR10_SPLIT_SIZES.items():
        items = images[split]
        if len(items) != expected:
            raise DataError(f"{archive} holds {len(items)} {split} images; expected {expected}.")
        order = mixed_order([key for key, _ in items])
        x = np.stack([items[i][1] for i in order])
        y = np.array([CIFAR10_CLASSES.index(items[i][0].split("/")[1]) for i in order], np.uint8)
        out.append((x, y))
    return tuple(out)


def _cifar_batches(read_batch):
    xs, ys = [], []
    for i in range(1, 6):
        d = read_batch(f"data_batch_{i}")
        xs.append(d[b"data"]), ys.append(d[b"labels"])
    t = read_batch("test_batch")

    def to_images(data):
        return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    return ((to_images(np.concatenate(xs)), np.concatenate(ys).astype(np.uint8)),
            (to_images(t[b"data"]), np.asarray(t[b"labels"], np.uint8)))


def _unpickle(fileobj, where):
    try:
        return pickle.load(fileobj, encoding="bytes")
    except Exception as err:  # pickle raises many types on bad input
        raise DataError(f"Corrupt CIFAR-10 batch {where}: {err}") from err


def _cifar_from_pickles(folder):
    def read(name):
        with open(folder / name, "rb") as f:
            return _unpickle(f, folder / name)

    return _cifar_batches(read)


def _cifar_from_python_tar(archive):
    try:
        with tarfile.open(archive, "r:gz") as tar:
            blobs = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt or unreadable archive {archive}: {err}") from err

    def read(name):
        if name not in blobs:
            raise DataError(f"{archive} has no member {name}.")
        return _unpickle(io.BytesIO(blobs[name]), f"{archive}:{name}")

    return _cifar_batches(read)


# ----------------------------------------------------------------------------------- FSDD
def _decode_wav(data, where):
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise DataError(f"Corrupt WAV file {where}: {err}") from err
    if rate != FSDD_SAMPLE_RATE:
        raise DataError(f"{where} is sampled at {rate} Hz; FSDD files must be {FSDD_SAMPLE_RATE} Hz.")
    if width not in (1, 2):
        raise DataError(f"{where} has {8 * width}-bit samples; expected 8 or 16-bit PCM.")
    if width == 2:
        audio = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    else:
        audio = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio


def _fsdd_items(folder, fileset):
    if fileset == ("recordings",):
        for path in sorted((folder / "recordings").glob("*.wav")):
            yield path.name, path.read_bytes(), str(path)
        return
    archive = folder / fileset[0]
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".wav"):
                    data = tar.extractfile(member).read()
                    yield Path(member.name).name, data, f"{archive}:{member.name}"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"Corrupt or unreadable archive {archive}: {err}") from err


def _load_fsdd(folder, fileset, length=FSDD_SAMPLE_RATE):
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length <= 0:
        raise DataError(f"FSDD length must be a positive number of samples, got {length!r}.")
    rows = []
    for filename, data, where in _fsdd_items(folder, fileset):
        parts = filename[:-4].split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise DataError(f"Unexpected FSDD file name {where}; expected <digit>_<speaker>_<index>.wav.")
        audio = _decode_wav(data, where)[:length]
        fixed = np.zeros(length, np.float32)
        fixed[: len(audio)] = audio
        rows.append(((parts[1], int(parts[0]), int(parts[2])), fixed, filename))
    if not rows:
        raise DataError(f"No FSDD recordings found in {folder}.")
    names = [filename for _, _, filename in rows]
    if len(set(names)) != len(names):
        raise DataError(f"{folder} holds two recordings with the same file name.")
    rows = [rows[i][:2] for i in mixed_order(names)]
    out = []
    for is_test in (False, True):
        sel = [(key, audio) for key, audio in rows if (key[2] <= 4) == is_test]
        x = np.stack([audio for _, audio in sel]) if sel else np.zeros((0, length), np.float32)
        y = np.array([key[1] for key, _ in sel], np.uint8)
        out.append((x, y))
    return tuple(out)


_LOADERS = {"mnist": _load_mnist, "cifar10": _load_cifar10, "fsdd": _load_fsdd}
