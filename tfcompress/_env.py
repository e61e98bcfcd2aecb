"""Select Keras 2 (``tf_keras``) before TensorFlow is imported.

larq and TensorFlow Model Optimization only work on Keras 2. TensorFlow >= 2.16 resolves
``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS`` is set when ``tf.keras`` is first
used, so this module must run before anything touches ``tf.keras``. ``tfcompress/__init__``
imports it first thing; the CLI, the tests and the examples go through that import.
"""

import os
import sys

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_FIX = (
    "Set the environment variable before TensorFlow is imported, e.g. "
    "`export TF_USE_LEGACY_KERAS=1`, or import tfcompress before tensorflow/keras "
    "in your script."
)


class KerasVersionError(ImportError):
    """Keras 3 is active, but tfcompress (and larq, TF-MOT) need Keras 2 (``tf_keras``)."""


def select_keras2():
    """Make ``tf.keras`` resolve to ``tf_keras``; raise if that is no longer possible."""
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is not None and value.strip().lower() in _FALSE:
        raise KerasVersionError(
            f"TF_USE_LEGACY_KERAS={value!r} selects Keras 3, but tfcompress builds on larq and "
            "TensorFlow Model Optimization, which need Keras 2 (tf_keras). Unset it or set "
            "TF_USE_LEGACY_KERAS=1."
        )
    if value is None or value.strip().lower() not in _TRUE:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        if "tensorflow" in sys.modules:
            # larq's optimizers are built from tf.keras at import; with TensorFlow already
            # imported without the variable they fail (LegacyOptimizerWarning.iterations).
            raise KerasVersionError(
                "TensorFlow was imported before tfcompress without TF_USE_LEGACY_KERAS=1 (Keras 3 "
                "would be selected), so "
                f"larq cannot load its Keras 2 optimizers. {_FIX}"
            )
    if "tensorflow" in sys.modules:
        # TensorFlow is already imported. ``tf.keras`` is a lazy loader that reads the
        # variable on first use, so it may still be possible to get Keras 2; check it.
        tf = sys.modules["tensorflow"]
        try:
            module = tf.keras.Model.__module__
        except Exception as err:  # pragma: no cover - depends on a broken install
            raise KerasVersionError(f"Could not resolve tf.keras ({err}). {_FIX}") from err
        if not module.startswith("tf_keras"):
            raise KerasVersionError(
                "TensorFlow was imported and `tf.keras` already resolved to Keras 3 "
                f"({module}) before tfcompress was imported. tfcompress, larq and TF-MOT need "
                f"Keras 2 (tf_keras). {_FIX}"
            )


def resolve_data_env():
    """Make a relative ``TFCOMPRESS_DATA`` absolute, against the working directory of now.

    A user writes ``TFCOMPRESS_DATA=../shared/data python script.py``: the path is meant
    relative to the directory the command was typed in. Once the process (a notebook, a test
    runner, a script) changes directory, or starts a subprocess elsewhere, a relative value would
    point somewhere else. ``import tfcompress`` therefore rewrites the variable once, in this
    process's environment (which child processes inherit), to the absolute path. A value that is
    already absolute, or empty, is left as it is. Returns the value in effect.
    """
    value = os.environ.get("TFCOMPRESS_DATA")
    if not value:
        return value
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded):
        os.environ["TFCOMPRESS_DATA"] = os.path.abspath(expanded)
    return os.environ["TFCOMPRESS_DATA"]
