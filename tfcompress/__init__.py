"""tfcompress: compress Keras models (binary, quantized, pruned, searched) and deploy them
as TFLite / Larq Compute Engine / TFLite Micro / Edge TPU files.

Importing tfcompress selects Keras 2 (``tf_keras``), which larq and TF-MOT need: it sets
``TF_USE_LEGACY_KERAS=1`` before TensorFlow resolves ``tf.keras``, and raises
:class:`KerasVersionError` if Keras 3 is already active. ``tfcompress.keras`` is that Keras
(``from tfcompress import keras``): use it for the models you build with tfcompress. It also makes a relative
``TFCOMPRESS_DATA`` absolute (against the working directory at import), so the data stay
found after the process changes directory.
"""

from tfcompress._command import started_as_command
from tfcompress._env import KerasVersionError, resolve_data_env, select_keras2

try:
    select_keras2()
except KerasVersionError:
    if not started_as_command():
        raise                # the command reports it as one line (tfcompress.cli.main)
resolve_data_env()


def _import_api():
    """Import the subpackages and top-level names (TensorFlow loads here).

    Runs at import, except in the ``tfcompress`` command (:mod:`tfcompress._command`), which
    parses its arguments first and then calls it.
    """
    from tfcompress._keras import keras  # noqa: F401  (the public handle: Keras 2, tf_keras)
    from tfcompress import (  # noqa: F401
        audio, data, detection, distill, layers, losses, lowrank, mixed_precision, models, nas,
        optimizers, pruning, quantizers, runtime, training,
    )
    from tfcompress.conversion import ConversionResult, convert, convert_sparse  # noqa: F401
    from tfcompress.errors import (  # noqa: F401
        ConversionError, DataError, InterpreterError, TfcompressError,
    )
    from tfcompress.runtime import Interpreter  # noqa: F401
    from tfcompress.runtime.verify import verify  # noqa: F401

    globals().update(locals())


if not started_as_command():
    _import_api()

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "ConversionResult", "DataError", "Interpreter", "InterpreterError",
    "KerasVersionError", "TfcompressError", "__version__", "audio", "convert", "convert_sparse", "data", "detection",
    "distill", "keras", "layers", "losses", "lowrank", "mixed_precision", "models", "nas",
    "optimizers", "pruning", "quantizers", "runtime", "training", "verify",
]
