"""Test setup: Keras 2 before TensorFlow loads, real data from TFCOMPRESS_DATA, fixed seeds."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
if "TFCOMPRESS_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["TFCOMPRESS_DATA"] = str(_SHARED)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfcompress  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _seed():
    from tfcompress._keras import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()
    # global Keras settings a test may have changed must not leak into the next one
    keras.backend.set_floatx("float32")
    keras.mixed_precision.set_global_policy(None)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, as (x_train, y_train), (x_test, y_test) uint8 arrays."""
    return tfcompress.data.load("mnist")


@pytest.fixture(scope="session")
def mnist_small(mnist):
    """Small real-MNIST slices, preprocessed to [-1, 1] with a channel axis."""
    from tfcompress.data.preprocess import for_model

    (x, y), (xt, yt) = mnist
    return (for_model("mnist", x[:4000]), y[:4000]), (for_model("mnist", xt[:500]), yt[:500])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_script():
    """``run_script("tools/bench_x.py", *args, timeout=...)``: run a repository script in a fresh
    Python process (real CLI, real imports); fails with the tail of its output unless it exits
    0; returns its stdout."""

    def run(relpath, *args, timeout=1500, cwd=None):
        r = subprocess.run([sys.executable, str(ROOT / relpath), *map(str, args)],
                           capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    return run

