"""Load saved models with every tfcompress and larq object registered."""

from pathlib import Path

from tfcompress._keras import keras
from tfcompress.errors import TfcompressError


def load_model(path, compile=False):
    """``tf_keras.models.load_model`` for ``.keras``, ``.h5`` or SavedModel folders.

    Importing larq (and tfcompress's own layers and quantizers, once present) registers their
    classes as Keras-serializable, so no ``custom_objects`` are needed.
    """
    import larq  # noqa: F401  (registers larq layers/quantizers)

    path = Path(path)
    if not path.exists():
        raise TfcompressError(f"Model file {path} does not exist.")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as err:
        raise TfcompressError(f"Could not load a Keras model from {path}: {err}") from err
