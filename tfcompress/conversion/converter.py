"""``tfcompress.convert``: one entry point for every deployment target."""

import contextlib
import os
import tempfile

from tfcompress._keras import tf
from tfcompress.conversion.checks import NEEDS_CALIBRATION, TARGETS, calibration_batches, check_model
from tfcompress.conversion.result import ConversionResult
from tfcompress.errors import ConversionError
from tfcompress.runtime.flatbuffer import inspect_flatbuffer

_IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}


def convert(model, *, target, representative_data=None, calibration_steps=500,
            io_type=None, allow_low_bit=False):
    """Convert a tf_keras model to a deployable flatbuffer.

    Args:
        model: a built tf_keras ``Model``.
        target: ``"float32"`` (plain TFLite), ``"float16"`` (half-precision weights),
            ``"dynamic"`` (int8 weights, float activations), ``"int8"`` (full integer),
            ``"int16x8"`` (int16 activations, int8 weights), ``"lce"`` (Larq Compute Engine,
            for binarized models), ``"micro"`` (full int8 for TFLite Micro, with a C array) or
            ``"edgetpu"`` (full int8 with int8 I/O and an Edge TPU compatibility report).
        representative_data: calibration inputs for the integer targets: an array whose first
            axis is examples (a list of arrays for several inputs) or a callable returning an
            iterator of input lists, as the TFLite converter takes.
        calibration_steps: at most this many examples are used for calibration.
        io_type: ``"float32"`` or ``"int8"`` model inputs/outputs. Default: ``"int8"`` for the
            ``int8``/``micro``/``edgetpu`` targets, ``"float32"`` otherwise.
        allow_low_bit: convert sub-8-bit (2-7 bit) quantized layers to an int8 target anyway
            (see :func:`tfcompress.conversion.checks.check_model`).

    Returns:
        :class:`ConversionResult` holding the bytes, size, op list and I/O quantization.

    Raises:
        ConversionError: an option or the model does not fit the target (names the layer).
    """
    if target not in TARGETS:
        raise ConversionError(f"Unknown target {target!r}; valid targets: {', '.join(TARGETS)}.")
    if not isinstance(calibration_steps, int) or calibration_steps < 1:
        raise ConversionError(f"calibration_steps must be a positive int, got {calibration_steps!r}.")
    if io_type is None:
        io_type = "int8" if target in ("int8", "micro", "edgetpu") else "float32"
    allowed_io = {"int8": ("float32", "int8", "uint8"), "micro": ("float32", "int8"),
                  "edgetpu": ("int8", "uint8"), "lce": ("float32", "int8"),
                  "int16x8": ("float32", "int16")}.get(target, ("float32",))
    if io_type not in allowed_io:
        raise ConversionError(
            f"io_type {io_type!r} is not available for target {target!r}; choose from "
            f"{', '.join(allowed_io)}."
        )
    if target in NEEDS_CALIBRATION and representative_data is None:
        raise ConversionError(
            f"Target {target!r} quantizes activations and needs representative_data (a few "
            "hundred real training inputs) to calibrate their ranges."
        )
    check_model(model, target, allow_low_bit=allow_low_bit)
    dataset = None
    if representative_data is not None and target in NEEDS_CALIBRATION + ("lce",):
        dataset = calibration_batches(representative_data, model, calibration_steps)

    with _quiet():
        if target == "lce":
            flatbuffer = _convert_lce(model, io_type)
        else:
            flatbuffer = _convert_tflite(model, target, dataset, io_type)
    info = inspect_flatbuffer(flatbuffer)
    result = ConversionResult(flatbuffer=flatbuffer, target=target, info=info, model=model)
    if target == "micro":
        from tfcompress.conversion.micro import attach_micro

        attach_micro(result)
    elif target == "edgetpu":
        from tfcompress.conversion.edgetpu import attach_edgetpu

        attach_edgetpu(result)
    return result


def _convert_tflite(model, target, dataset, io_type):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if target == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif target == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif target in ("int8", "micro", "edgetpu"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = _IO_TYPES[io_type]
        conv.inference_output_type = _IO_TYPES[io_type]
    elif target == "int16x8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = dataset
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        conv.inference_input_type = _IO_TYPES[io_type]
        conv.inference_output_type = _IO_TYPES[io_type]
    try:
        return conv.convert()
    except Exception as err:
        raise ConversionError(f"The TFLite converter failed for target {target!r}: {err}") from err


def _convert_lce(model, io_type):
    import larq_compute_engine as lce

    try:
        return lce.convert_keras_model(
            model, inference_input_type=_IO_TYPES[io_type], inference_output_type=_IO_TYPES[io_type]
        )
    except Exception as err:
        raise ConversionError(f"The Larq Compute Engine converter failed: {err}") from err


@contextlib.contextmanager
def _quiet():
    """Silence the C++ converters' stderr chatter unless TFCOMPRESS_VERBOSE is set."""
    if os.environ.get("TFCOMPRESS_VERBOSE"):
        yield
        return
    try:
        fd = os.dup(2)
    except OSError:  # no real stderr (e.g. some notebooks)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(fd, 2)
            sink.seek(0)
            tail = sink.read()[-4000:].decode(errors="replace")
            if tail.strip():
                os.write(2, b"[converter log, last lines]\n" + tail.encode())
            raise
        finally:
            os.dup2(fd, 2)
            os.close(fd)
