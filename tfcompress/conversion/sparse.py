"""Export a pruned model with TFLite's sparse weight encoding (``EXPERIMENTAL_SPARSITY``).

Used after :func:`tfcompress.pruning.magnitude` training and :func:`tfcompress.pruning.strip`:
the converter stores weights that are mostly zero in a compressed (CSR-like) layout, which
LiteRT densifies or runs with sparse kernels.
"""

from tfcompress._keras import keras, tf
from tfcompress.conversion.checks import calibration_batches, check_model
from tfcompress.conversion.result import ConversionResult
from tfcompress.conversion.tflite_internals import IO_TYPES, quiet
from tfcompress.errors import ConversionError
from tfcompress.inspection import iter_layers
from tfcompress.runtime.flatbuffer import inspect_flatbuffer

__all__ = ["convert_sparse"]


def _has_pruning_wrappers(model):
    # TF-MOT's training wrapper, found by class name so that conversion never imports training
    # code (tfcompress.pruning or TF-MOT's pruning internals).
    return any(type(layer).__name__ == "PruneLowMagnitude" for layer in iter_layers(model))


def convert_sparse(model, *, target="float32", representative_data=None, calibration_steps=500,
                   io_type=None):
    """Convert a pruned (stripped) model with TFLite's sparse weight encoding.

    Sets ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (with ``DEFAULT`` for the integer
    targets), so the converter stores sufficiently sparse constant weights in TFLite's sparse
    format; ai-edge-litert densifies them at load time or runs sparse kernels.

    Args:
        model: a stripped tf_keras model (see :func:`strip`).
        target: ``"float32"``, ``"dynamic"`` or ``"int8"`` (full integer; needs
            ``representative_data``).
        representative_data, calibration_steps, io_type: as for ``tfcompress.convert``.

    Returns:
        :class:`tfcompress.ConversionResult`; ``result.verify(x, y)`` runs it in ai-edge-litert.

    Raises:
        ConversionError: wrappers still present, an unknown target or missing calibration data.
    """
    if target not in ("float32", "dynamic", "int8"):
        raise ConversionError(f"convert_sparse supports targets float32, dynamic and int8, "
                              f"got {target!r}.")
    if isinstance(model, keras.Model) and _has_pruning_wrappers(model):
        raise ConversionError(f"Model {model.name!r} still holds pruning wrappers; call "
                              "tfcompress.pruning.strip(model) before converting.")
    if io_type is None:
        io_type = "int8" if target == "int8" else "float32"
    if io_type not in (("float32", "int8") if target == "int8" else ("float32",)):
        raise ConversionError(f"io_type {io_type!r} is not available for target {target!r}.")
    if target == "int8" and representative_data is None:
        raise ConversionError("Target 'int8' needs representative_data (a few hundred real "
                              "training inputs) to calibrate activation ranges.")
    check_model(model, target)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if target in ("dynamic", "int8"):
        conv.optimizations.append(tf.lite.Optimize.DEFAULT)
    if target == "int8":
        conv.representative_dataset = calibration_batches(representative_data, model,
                                                          calibration_steps)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = IO_TYPES[io_type]
        conv.inference_output_type = IO_TYPES[io_type]
    with quiet():
        try:
            flatbuffer = conv.convert()
        except Exception as err:
            raise ConversionError(
                f"The TFLite converter failed (sparse, {target!r}): {err}") from err
    result = ConversionResult(flatbuffer=flatbuffer, target=target,
                              info=inspect_flatbuffer(flatbuffer), model=model)
    result.extras["sparse_encoding"] = "EXPERIMENTAL_SPARSITY"
    return result
