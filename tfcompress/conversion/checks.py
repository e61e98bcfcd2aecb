"""Pre-conversion checks: every refusal is a ConversionError naming the layer and the reason."""

import numpy as np

from tfcompress.errors import ConversionError
from tfcompress.inspection import (
    binary_layers, check_tf_keras_model, iter_layers, layer_precisions,
)

TARGETS = ("float32", "float16", "dynamic", "int8", "int16x8", "lce", "micro", "edgetpu")
NEEDS_CALIBRATION = ("int8", "int16x8", "micro", "edgetpu")


def check_model(model, target, *, allow_low_bit=False):
    """Raise ConversionError if ``model`` cannot be converted to ``target`` faithfully."""
    check_tf_keras_model(model, "tfcompress.convert", ConversionError)
    if not model.built or not model.inputs:
        raise ConversionError(
            f"Model {model.name!r} has no defined inputs; call it on data or build it with "
            "keras.Input(...) before converting."
        )
    for layer in iter_layers(model):
        policy = getattr(getattr(layer, "dtype_policy", None), "name", "float32")
        if policy == "mixed_float16" or policy == "mixed_bfloat16":
            raise ConversionError(
                f"Layer {layer.name!r} uses the {policy!r} dtype policy; the TFLite and LCE "
                "converters need float32 layers. Rebuild the model under the 'float32' policy, "
                "copy the weights (model.get_weights()), then convert (use target='float16' "
                "for a half-precision file)."
            )
        try:
            layer_precisions(layer)
        except ValueError as err:
            raise ConversionError(f"Layer {layer.name!r}: {err}") from err
    binary = binary_layers(model)
    if binary and target != "lce":
        raise ConversionError(
            f"Layer(s) {', '.join(repr(n) for n in binary)} are binary (1-bit weights and "
            f"inputs), which target {target!r} cannot store or run as 1-bit: they would be "
            "kept as float/int8 sign ops with no size or speed gain. Use target='lce' (Larq "
            "Compute Engine) for binarized models."
        )
    if target in ("int8", "int16x8", "micro", "edgetpu") and not allow_low_bit:
        low = {}
        for layer in iter_layers(model):
            p = {r: b for r, b in layer_precisions(layer).items() if b < 8}
            if p and layer.name not in binary:
                low[layer.name] = p
        if low:
            desc = "; ".join(f"{n!r} " + ", ".join(f"{r}={b} bits" for r, b in p.items())
                             for n, p in low.items())
            raise ConversionError(
                f"Target {target!r} stores weights and activations as 8-bit integers, but "
                f"layer(s) {desc} are quantized below 8 bits. TFLite has no sub-8-bit storage, "
                "so the file would be no smaller than plain int8 (the low-bit grid is kept only "
                "as far as int8 can represent it). Pass allow_low_bit=True to convert anyway."
            )


def calibration_batches(representative_data, model, steps):
    """A generator factory for the TFLite converter from an array, list of arrays or callable."""
    if representative_data is None:
        raise ConversionError("representative_data is required for this target.")
    if callable(representative_data):
        return representative_data
    arrays = representative_data if isinstance(representative_data, (list, tuple)) else [representative_data]
    arrays = [np.asarray(a, np.float32) for a in arrays]
    if len(arrays) != len(model.inputs):
        raise ConversionError(
            f"representative_data has {len(arrays)} input array(s); the model has {len(model.inputs)}."
        )
    for a, t in zip(arrays, model.inputs):
        want = tuple(t.shape[1:])
        if a.shape[1:] != want and None not in want:
            raise ConversionError(
                f"representative_data for input {t.name!r} has shape {a.shape}; expected "
                f"(N,) + {want}."
            )
        if not np.isfinite(a).all():
            raise ConversionError("representative_data contains NaN or infinite values.")
    n = min(len(arrays[0]), steps)
    if n == 0:
        raise ConversionError("representative_data is empty.")

    def gen():
        for i in range(n):
            yield [a[i: i + 1] for a in arrays]

    return gen
