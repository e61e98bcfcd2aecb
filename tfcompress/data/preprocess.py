"""The input conventions tfcompress's examples and CLI use for each dataset."""

import numpy as np

from tfcompress.errors import DataError


def for_model(name, x):
    """Raw arrays from :func:`tfcompress.data.load` -> float32 model inputs.

    - mnist: ``(N, 28, 28)`` uint8 -> ``(N, 28, 28, 1)`` in [-1, 1]
    - cifar10: ``(N, 32, 32, 3)`` uint8 -> same shape in [-1, 1]
    - fsdd: float32 waveforms, unchanged (already in [-1, 1])
    """
    if name == "mnist":
        return (np.asarray(x)[..., None].astype(np.float32) / 127.5) - 1.0
    if name == "cifar10":
        return (np.asarray(x).astype(np.float32) / 127.5) - 1.0
    if name == "fsdd":
        return np.asarray(x, np.float32)
    raise DataError(f"No preprocessing defined for dataset {name!r}.")
