"""tfcompress: compress Keras models (binary, quantized, pruned, searched) and deploy them
as TFLite / Larq Compute Engine / TFLite Micro / Edge TPU files.

Importing tfcompress selects Keras 2 (``tf_keras``), which larq and TF-MOT need: it sets
``TF_USE_LEGACY_KERAS=1`` before TensorFlow resolves ``tf.keras``, and raises
:class:`KerasVersionError` if Keras 3 is already active. It also makes a relative
``TFCOMPRESS_DATA`` absolute (against the working directory at import), so the data stay
found after the process changes directory.
"""

from tfcompress._env import KerasVersionError, resolve_data_env, select_keras2

select_keras2()
resolve_data_env()

from tfcompress import (  # noqa: E402
    audio, data, detection, distill, layers, lowrank, mixed_precision, models, nas, optimizers,
    pruning, quantizers, runtime,
)
from tfcompress.conversion import ConversionResult, convert  # noqa: E402
from tfcompress.errors import (  # noqa: E402
    ConversionError, DataError, InterpreterError, TfcompressError,
)
from tfcompress.runtime import Interpreter  # noqa: E402
from tfcompress.runtime.verify import verify  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "ConversionResult", "DataError", "Interpreter", "InterpreterError",
    "KerasVersionError", "TfcompressError", "__version__", "audio", "convert", "data", "detection",
    "distill", "layers", "lowrank", "mixed_precision", "models", "nas", "optimizers", "pruning",
    "quantizers", "runtime", "verify",
]
