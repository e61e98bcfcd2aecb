"""The Keras-2 guard, run in fresh interpreters (the guard acts at import time)."""

import os
import subprocess
import sys

import pytest


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    full.update(env)
    full["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=300)


def test_import_selects_keras2_without_env():
    r = _run("import tfcompress, tensorflow as tf, tf_keras, os\n"
             "from tfcompress._keras import keras\n"
             "assert keras is tf_keras, keras\n"
             "assert tf.keras.Model.__module__.startswith('tf_keras')\n"
             "import larq, tensorflow_model_optimization\n"
             "print('OK', os.environ['TF_USE_LEGACY_KERAS'])")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK 1" in r.stdout


def test_tensorflow_imported_first_without_env_raises_clear_error():
    r = _run("import tensorflow as tf\nimport tfcompress")
    assert r.returncode != 0
    assert "KerasVersionError" in r.stderr and "TF_USE_LEGACY_KERAS=1" in r.stderr


def test_tensorflow_imported_first_with_env_is_fine():
    r = _run("import tensorflow as tf\nimport tfcompress\n"
             "assert tf.keras.Model.__module__.startswith('tf_keras')\nprint('OK')",
             TF_USE_LEGACY_KERAS="1")
    assert r.returncode == 0, r.stderr[-2000:]


def test_keras3_already_active_raises_clear_error():
    r = _run("import tensorflow as tf\n_ = tf.keras.Model\nimport tfcompress")
    assert r.returncode != 0
    assert "KerasVersionError" in r.stderr
    assert "TF_USE_LEGACY_KERAS=1" in r.stderr and "Keras 3" in r.stderr


@pytest.mark.parametrize("value", ["0", "false"])
def test_env_forcing_keras3_raises(value):
    r = _run("import tfcompress", TF_USE_LEGACY_KERAS=value)
    assert r.returncode != 0
    assert "KerasVersionError" in r.stderr and "selects Keras 3" in r.stderr
