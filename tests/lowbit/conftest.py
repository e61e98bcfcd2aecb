"""Shared real-data fixtures for the low-bit export tests (trained once per session)."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist_lowbit(mnist):
    """(x_train, y_train), (x_test, y_test): 6000 / 1000 real MNIST images in [-1, 1]."""
    from tfcompress.data.preprocess import for_model

    (x, y), (xt, yt) = mnist
    return (for_model("mnist", x[:6000]), y[:6000].astype(np.int64)), \
        (for_model("mnist", xt[:1000]), yt[:1000].astype(np.int64))


@pytest.fixture(scope="session")
def float_mnist(mnist_lowbit):
    from lowbit_models import train_float

    (x, y), _ = mnist_lowbit
    return train_float(x, y)
