"""Read what a Keras model is made of: per-layer precisions of weights and inputs.

Shared by the converter's pre-checks and the summary report; it never imports training code.
A quantizer declares its bit width as ``precision`` (larq's convention, followed by every
tfcompress quantizer); a layer without quantizers is 32-bit float.
"""

from tfcompress._keras import keras

# Attribute names of larq-style layers: (weight quantizer, input quantizer).
_QUANTIZER_ATTRS = (
    ("kernel_quantizer", "kernel"),
    ("depthwise_quantizer", "depthwise_kernel"),
    ("pointwise_quantizer", "pointwise_kernel"),
    ("input_quantizer", "input"),
)


def check_tf_keras_model(model, where, error=TypeError):
    """Raise ``error`` unless ``model`` is a tf_keras (Keras 2) ``Model``; the message names
    ``where`` and, for a Keras 3 model, the way out."""
    if isinstance(model, keras.Model):
        return model
    kind = type(model).__module__ + "." + type(model).__name__
    hint = ""
    if type(model).__module__.startswith("keras"):
        hint = (" It is a Keras 3 model (`import keras`); tfcompress, larq and TF-MOT work on "
                "Keras 2: build the model with `from tfcompress import keras` (import tfcompress "
                "before TensorFlow/Keras), or rebuild it there and copy the weights "
                "(model.get_weights()).")
    raise error(f"{where} expects a tf_keras Model, got {kind}.{hint}")


def quantizer_precision(quantizer):
    """Bit width declared by a quantizer (``None`` -> 32, float)."""
    if quantizer is None:
        return 32
    precision = getattr(quantizer, "precision", None)
    if precision is None:
        # A bare function such as larq's `ste_sign` or an unknown callable: no declared bits.
        name = getattr(quantizer, "__name__", type(quantizer).__name__)
        raise ValueError(
            f"Quantizer {name!r} does not declare its bit width (`precision`); use a "
            "quantizer object (e.g. tfcompress.quantizers.get('ste_sign'))."
        )
    return int(precision)


def _quantizer_objects(layer):
    for attr, role in _QUANTIZER_ATTRS:
        q = getattr(layer, attr, None)
        if q is not None:
            yield role, q


def layer_precisions(layer):
    """``{role: bits}`` for a layer's quantized roles (``kernel``, ``input``, ...).

    Layers with no quantizer attributes return ``{}`` (they compute in float). Quantizers whose
    bit width is unknown (bare functions) count as 1-bit when named like larq's binary
    quantizers and raise otherwise.
    """
    own = getattr(layer, "tfcompress_precisions", None)
    if callable(own):   # layers that binarize internally declare their bits themselves
        return dict(own())
    out = {}
    for role, q in _quantizer_objects(layer):
        try:
            out[role] = quantizer_precision(q)
        except ValueError:
            name = getattr(q, "__name__", "")
            if name in {"ste_sign", "approx_sign", "swish_sign", "magnitude_aware_sign"}:
                out[role] = 1
            else:
                raise
    return out


def iter_layers(model):
    """All layers of a model, descending into nested models, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def binary_layers(model):
    """Names of layers whose weights and inputs are both 1-bit (what LCE turns into Lce ops)."""
    names = []
    for layer in iter_layers(model):
        p = layer_precisions(layer)
        weight_bits = [b for role, b in p.items() if role != "input"]
        if weight_bits and p.get("input") == 1 and all(b == 1 for b in weight_bits):
            names.append(layer.name)
    return names


def low_bit_layers(model, below=8):
    """``{layer: {role: bits}}`` for layers with any quantized role under ``below`` bits."""
    out = {}
    for layer in iter_layers(model):
        p = layer_precisions(layer)
        if any(b < below for b in p.values()):
            out[layer.name] = p
    return out
