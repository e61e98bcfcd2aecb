"""Tiny search spaces and real CIFAR-10 images shrunk to 8x8, shared by the NAS tests."""

import numpy as np

import tfcompress
from tfcompress.data.preprocess import for_model
from tfcompress.nas import DartsSpace

# 3 arms after excluding "none"; one conv op so the binary convolution code is exercised.
SMALL_OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3"]

_CACHE = {}


def cifar8(n_train=64, n_val=32, classes=4):
    """Real CIFAR-10 images of the first ``classes`` classes, 4x4-average-pooled to 8x8."""
    key = (n_train, n_val, classes)
    if key not in _CACHE:
        (x, y), _ = tfcompress.data.load("cifar10")
        keep = np.where(y.reshape(-1) < classes)[0][: n_train + n_val]
        xs = for_model("cifar10", x[keep]).reshape(-1, 8, 4, 8, 4, 3).mean(axis=(2, 4))
        ys = y.reshape(-1)[keep].astype(np.int64)
        _CACHE[key] = ((xs[:n_train].astype(np.float32), ys[:n_train]),
                       (xs[n_train:].astype(np.float32), ys[n_train:]))
    return _CACHE[key]


def tiny_space(kind="binary", ops=SMALL_OPS, cells=1, nodes=2, **kwargs):
    return DartsSpace(num_cells=cells, channels=8, ops=kind, nodes=nodes, primitives=ops, **kwargs)
