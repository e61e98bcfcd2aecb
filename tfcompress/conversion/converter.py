"""``tfcompress.convert``: one entry point for every deployment target."""

from tfcompress._keras import tf
from tfcompress.conversion.checks import NEEDS_CALIBRATION, TARGETS, calibration_batches, check_model
from tfcompress.conversion.diagnose import explain_failure
from tfcompress.conversion.result import ConversionResult
from tfcompress.conversion.tflite_internals import IO_TYPES as _IO_TYPES
from tfcompress.conversion.tflite_internals import quiet as _quiet
from tfcompress.errors import ConversionError
from tfcompress.runtime.flatbuffer import inspect_flatbuffer


def convert(model, *, target, representative_data=None, calibration_steps=500,
            io_type=None, allow_low_bit=False, plan=None, pack_weights=True, compute="int8"):
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
            (see :func:`tfcompress.conversion.checks.check_model`). For models with 2-8-bit
            quantizers the ``int8``/``micro``/``edgetpu`` targets use the exact-grid exporter
            (:mod:`tfcompress.conversion.lowbit`: the trained grids, packed INT4 kernels);
            there it allows a <= 4-bit kernel the runtime cannot run packed to be stored as int8.
        plan: the :class:`~tfcompress.mixed_precision.BitPlan` a model was built from
            (``mixed_precision.apply``); checked against the model (a mismatch names the layer)
            and its bits shown per layer in ``result.report()["layers"]``.
        pack_weights: exact-grid exporter only: ``True`` (default) stores kernels trained at 4
            bits or fewer packed (INT4/INT2) where the target's runtime runs them and its
            requantization stays exact (multiplier <= 2^-9; the report says why a layer was kept
            int8); ``"always"`` packs wherever the runtime runs them; ``False`` keeps every
            kernel int8, scaled by the largest integer that fits (a finer int32 bias).
        compute: exact-grid exporter, ``int8``/``micro`` targets: ``"int8"`` (default; int8
            activations, the smallest and fastest file) or ``"16x8"``: every quantized
            convolution and dense layer reads its input grid spread over int16 and runs in
            TFLite's 16x8 kernels (int8 weights, int64 bias), so the bias no longer rounds to
            half an int8 accumulator unit (which moves low-bit grid levels; CIFAR-10 4-bit rows
            of benchmarks/lowbit_16x8: agreement 96-98% -> 99.7-99.99%; LSQ+ layers with an
            input offset at a SAME border stay int8); kernels stay int8
            (not packed) and these kernels are slower (no XNNPACK).

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
    from tfcompress.conversion import lowbit

    exact = target in ("int8", "micro", "edgetpu") and (plan is not None or lowbit.has_quantizers(model))
    if pack_weights not in (True, False, "always"):
        raise ConversionError(f"pack_weights must be True, False or 'always', got {pack_weights!r}.")
    if compute not in ("int8", "16x8"):
        raise ConversionError(f"compute must be 'int8' or '16x8', got {compute!r}.")
    if compute == "16x8" and not (exact and target in ("int8", "micro")):
        raise ConversionError(
            "compute='16x8' applies to models with 2-8-bit quantizers converted for the int8 or "
            f"micro target (got target {target!r}"
            + ("" if exact else ", and a model without quantizers: use target='int16x8'") + ").")
    if compute == "16x8" and pack_weights == "always":
        raise ConversionError("compute='16x8' runs TFLite's 16x8 kernels, which take int8 "
                              "filters only: pack_weights='always' cannot be honoured.")
    if plan is not None and not exact:
        raise ConversionError(f"plan= applies to the int8, micro and edgetpu targets, not {target!r}.")
    check_model(model, target, allow_low_bit=allow_low_bit or exact)
    dataset = None
    if representative_data is not None and target in NEEDS_CALIBRATION + ("lce",):
        dataset = calibration_batches(representative_data, model, calibration_steps)

    planes = []
    with _quiet() as log:
        if target == "lce":
            from tfcompress.conversion import bitplanes

            # binary-input layers with multi-bit kernels -> one LceBconv2d per bit plane
            lce_model, planes = bitplanes.rewrite(model)
            flatbuffer = _convert_lce(lce_model, io_type, log)
        elif exact:
            flatbuffer, extras = lowbit.export(
                model, target=target, representative_data=representative_data,
                calibration_steps=calibration_steps, io_type=io_type,
                allow_low_bit=allow_low_bit, plan=plan, pack=pack_weights, compute=compute)
        else:
            flatbuffer = _convert_tflite(model, target, dataset, io_type, log)
    info = inspect_flatbuffer(flatbuffer)
    result = ConversionResult(flatbuffer=flatbuffer, target=target, info=info, model=model)
    if exact:
        result.extras.update(extras)
    if planes:
        result.extras["bitplanes"] = planes
    if target == "micro":
        from tfcompress.conversion.micro import attach_micro

        attach_micro(result)
    elif target == "edgetpu":
        from tfcompress.conversion.edgetpu import attach_edgetpu

        attach_edgetpu(result)
    return result


def _convert_tflite(model, target, dataset, io_type, log=None):
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
        raise ConversionError(explain_failure(model, target, _with_log(err, log))) from err


def _convert_lce(model, io_type, log=None):
    import larq_compute_engine as lce

    try:
        return lce.convert_keras_model(
            model, inference_input_type=_IO_TYPES[io_type], inference_output_type=_IO_TYPES[io_type]
        )
    except Exception as err:
        raise ConversionError(explain_failure(model, "lce", _with_log(err, log),
                                              converter="Larq Compute Engine")) from err


def _with_log(err, log):
    """The exception text, plus what the C++ converter printed when the exception says little
    (LCE reports only "Could not translate to flatbuffer" and prints the op to stderr)."""
    text = str(err)
    printed = log.text() if log is not None else ""
    printed = "\n".join(line for line in printed.splitlines() if "error" in line.lower())
    return text if not printed.strip() or printed.strip() in text else f"{text}\n{printed}"
