"""Everything tfcompress takes from the TFLite converter beyond its public API, in one place.

The public ``tf.lite.TFLiteConverter`` API calibrates and quantizes in one call. Q-YOLO's
post-training quantization (:func:`tfcompress.detection.ptq`) must change the calibrated
activation ranges in between, which only TensorFlow's private converter entry points allow:

- ``TFLiteConverter._experimental_calibrate_only`` (a float flatbuffer holding the calibrated
  min/max of every tensor);
- ``tensorflow.lite.python.convert.mlir_quantize`` (quantize such a flatbuffer with its ranges);
- ``tensorflow.lite.python.lite._deduplicate_readonly_buffers`` (the converter's last step).

They are private and may change with any TensorFlow release, so they are used only through the
functions here, and only with the TensorFlow versions they were checked with
(:data:`TESTED_TENSORFLOW`): any other version raises :class:`~tfcompress.ConversionError`
saying so, before anything runs, instead of failing somewhere inside TensorFlow. Set
``TFCOMPRESS_ALLOW_UNTESTED_TF=1`` to try anyway.

Also here: :data:`IO_TYPES` and the two context managers that keep the C++ converters'
console output away from the user (:func:`quiet`, :func:`quiet_stdout`).
"""

import contextlib
import os
import sys
import tempfile

from tfcompress._keras import tf
from tfcompress.errors import ConversionError

__all__ = ["ConverterLog", "IO_TYPES", "TESTED_TENSORFLOW", "calibrate_only", "check_tensorflow",
           "deduplicate_buffers", "flatbuffer_to_object", "object_to_flatbuffer",
           "quantize_calibrated", "quiet", "quiet_stdout"]

# TensorFlow major.minor versions whose private converter entry points were checked.
TESTED_TENSORFLOW = ("2.21",)
IO_TYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}


def check_tensorflow(feature, version=None):
    """Raise :class:`ConversionError` unless TensorFlow ``version`` (default: the installed one)
    is one whose converter internals were checked for ``feature``."""
    version = version or tf.__version__
    if ".".join(version.split(".")[:2]) in TESTED_TENSORFLOW:
        return
    if os.environ.get("TFCOMPRESS_ALLOW_UNTESTED_TF") == "1":
        return
    raise ConversionError(
        f"{feature} uses private TFLite converter internals that tfcompress checked with "
        f"TensorFlow {', '.join(TESTED_TENSORFLOW)} only; this is TensorFlow {version}. Install "
        f"tensorflow=={TESTED_TENSORFLOW[-1]}.* (the pinned version), or set "
        "TFCOMPRESS_ALLOW_UNTESTED_TF=1 to try anyway and check the result with result.verify().")


def calibrate_only(converter, feature="calibration"):
    """Run ``converter`` (a configured ``TFLiteConverter`` with a representative dataset) in
    calibrate-only mode; return the float flatbuffer with the calibrated tensor ranges."""
    check_tensorflow(feature)
    if not hasattr(converter, "_experimental_calibrate_only"):
        raise ConversionError(f"{feature}: this TensorFlow's TFLiteConverter has no "
                              "calibrate-only mode (_experimental_calibrate_only).")
    converter._experimental_calibrate_only = True
    return bytes(converter.convert())


def quantize_calibrated(flatbuffer, *, io_type="int8", per_channel=True, feature="quantization"):
    """Quantize a calibrated float flatbuffer with the ranges it holds (full int8)."""
    check_tensorflow(feature)
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError as err:
        raise ConversionError(f"{feature} needs TensorFlow's MLIR quantizer entry point "
                              f"(tensorflow.lite.python.convert.mlir_quantize): {err}") from err
    io = IO_TYPES[io_type]
    return bytes(mlir_quantize(flatbuffer, disable_per_channel=not per_channel,
                               input_data_type=io, output_data_type=io))


def deduplicate_buffers(flatbuffer):
    """Share identical read-only buffers (the TFLite converter's own last step); returns the
    input unchanged if this TensorFlow lacks the helper (it is an optimization only)."""
    try:
        from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
    except ImportError:   # pragma: no cover - present in the tested versions
        return bytes(flatbuffer)
    return bytes(_deduplicate_readonly_buffers(flatbuffer))


def flatbuffer_to_object(flatbuffer):
    """The flatbuffer as TFLite's mutable schema object (``tensorflow.lite.tools``)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))


def object_to_flatbuffer(model):
    """The inverse of :func:`flatbuffer_to_object`."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class ConverterLog:
    """What the C++ converters printed inside :func:`quiet` (read it with :meth:`text`)."""

    def __init__(self, sink=None):
        self._sink = sink

    def text(self, limit=4000):
        """The last ``limit`` characters printed so far ('' when nothing was captured)."""
        if self._sink is None:
            return ""
        pos = self._sink.tell()
        self._sink.seek(0)
        data = self._sink.read()
        self._sink.seek(pos)
        return data[-limit:].decode(errors="replace")


@contextlib.contextmanager
def quiet():
    """Silence the C++ converters' stderr chatter unless TFCOMPRESS_VERBOSE is set; yields a
    :class:`ConverterLog`. On an error the last lines of what they printed are shown."""
    if os.environ.get("TFCOMPRESS_VERBOSE"):
        yield ConverterLog()
        return
    try:
        fd = os.dup(2)
    except OSError:  # no real stderr (e.g. some notebooks)
        yield ConverterLog()
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        log = ConverterLog(sink)
        try:
            yield log
        except BaseException:
            os.dup2(fd, 2)
            tail = log.text()
            if tail.strip():
                os.write(2, b"[converter log, last lines]\n" + tail.encode())
            raise
        finally:
            os.dup2(fd, 2)
            os.close(fd)


@contextlib.contextmanager
def quiet_stdout():
    """Keep C-level prints of the quantizer off the caller's stdout (stderr: :func:`quiet`)."""
    if os.environ.get("TFCOMPRESS_VERBOSE"):
        yield
        return
    try:
        fd = os.dup(1)
    except OSError:   # pragma: no cover - no real stdout
        yield
        return
    sys.stdout.flush()
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)
