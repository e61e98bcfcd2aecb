"""The one place tfcompress imports Keras from.

Always Keras 2 (``tf_keras``), the Keras larq and TF-MOT are built on. Never ``import keras``
in this package: that is Keras 3.
"""

from tfcompress._env import select_keras2

select_keras2()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

if not tf.keras.Model.__module__.startswith("tf_keras"):  # pragma: no cover - guarded above
    raise ImportError("tf.keras does not resolve to tf_keras; set TF_USE_LEGACY_KERAS=1.")

__all__ = ["keras", "tf"]
