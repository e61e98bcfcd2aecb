"""larq's quantized layers with tfcompress's quantizer aliases and TF-MOT pruning support.

Each class is a larq layer (so LCE converts it) that

- resolves ``input_quantizer`` / ``kernel_quantizer`` / ... through
  :func:`tfcompress.quantizers.get`, so every tfcompress alias (``"lsq"``, ``"trq"``,
  ``"ede_sign"``, ...) and larq's own work, and bare larq aliases become quantizer objects
  with a declared ``precision``;
- implements TF-MOT's ``PrunableLayer`` protocol (``get_prunable_weights``), so
  ``tfmot.sparsity.keras.prune_low_magnitude`` accepts it (larq layers are refused);
- keeps larq's constructor signature exactly (checked by the tests).
"""

import functools
import inspect

import larq as lq
import tensorflow_model_optimization as tfmot

from tfcompress import quantizers
from tfcompress._keras import tf

_QUANTIZER_ARGS = ("input_quantizer", "kernel_quantizer", "depthwise_quantizer",
                   "pointwise_quantizer")


def pad_same(x, kernel_size, strides, dilation_rate, value):
    """Pad ``x`` (NHWC) as ``padding="same"`` would, with the constant ``value`` (larq's
    ``pad_values``: 1.0 keeps a binarized border at +1); convolve with ``"VALID"`` after it."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation_rate
    in_h, in_w = x.shape[1], x.shape[2]
    out_h, out_w = -(-in_h // sh), -(-in_w // sw)
    ph = max((out_h - 1) * sh + (kh - 1) * dh + 1 - in_h, 0)
    pw = max((out_w - 1) * sw + (kw - 1) * dw + 1 - in_w, 0)
    return tf.pad(x, [[0, 0], [ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]],
                  constant_values=value)


def bias_and_activation(layer, outputs):
    """A conv layer's epilogue: ``bias_add`` when ``layer.use_bias``, then ``layer.activation``
    (shared by the method layers that compute their own convolution)."""
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, layer.bias)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def binary_kernel_precisions(input_quantizer):
    """``tfcompress_precisions()`` of a layer with a 1-bit kernel and an optional input
    quantizer (1 bit unless the quantizer says otherwise)."""
    bits = {"kernel": 1}
    if input_quantizer is not None:
        bits["input"] = getattr(input_quantizer, "precision", 1) or 1
    return bits


def resolve_quantizers(base, defaults=None):
    """Class decorator: an ``__init__`` with ``base``'s signature (new ``defaults`` applied)
    that resolves quantizer identifiers with :func:`tfcompress.quantizers.get`."""
    base_sig = inspect.signature(base.__init__)
    defaults = dict(defaults or {})
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p
              for p in base_sig.parameters.values()]
    sig = base_sig.replace(parameters=params)

    def decorate(cls):
        own_init = cls.__dict__.get("__init__")

        @functools.wraps(base.__init__)
        def __init__(self, *args, **kwargs):
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            for name in _QUANTIZER_ARGS:
                if name in bound.arguments:
                    bound.arguments[name] = quantizers.get(bound.arguments[name])
            if own_init is not None:
                own_init(*bound.args, **bound.kwargs)
            else:
                base.__init__(*bound.args, **bound.kwargs)

        __init__.__signature__ = sig
        cls.__init__ = __init__
        return cls

    return decorate


def add_param(cls, name, default):
    """Show a keyword-only constructor argument ``name`` in ``cls``'s signature."""
    sig = inspect.signature(cls.__init__)
    params = list(sig.parameters.values())
    new = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    idx = next((i for i, p in enumerate(params) if p.kind == p.VAR_KEYWORD), len(params))
    cls.__init__.__signature__ = sig.replace(parameters=params[:idx] + [new] + params[idx:])
    return cls


class _Prunable(tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
        return [w for w in (getattr(self, "kernel", None), getattr(self, "depthwise_kernel", None),
                            getattr(self, "pointwise_kernel", None)) if w is not None]


def _register(cls):
    from tfcompress._keras import keras

    return keras.utils.register_keras_serializable(package="tfcompress")(cls)


@_register
@resolve_quantizers(lq.layers.QuantConv2D)
class QuantConv2D(_Prunable, lq.layers.QuantConv2D):
    """``larq.layers.QuantConv2D`` + tfcompress quantizer aliases + TF-MOT pruning."""


@_register
@resolve_quantizers(lq.layers.QuantConv1D)
class QuantConv1D(_Prunable, lq.layers.QuantConv1D):
    """``larq.layers.QuantConv1D`` + tfcompress quantizer aliases + TF-MOT pruning."""


@_register
@resolve_quantizers(lq.layers.QuantDense)
class QuantDense(_Prunable, lq.layers.QuantDense):
    """``larq.layers.QuantDense`` + tfcompress quantizer aliases + TF-MOT pruning."""


@_register
@resolve_quantizers(lq.layers.QuantDepthwiseConv2D)
class QuantDepthwiseConv2D(_Prunable, lq.layers.QuantDepthwiseConv2D):
    """``larq.layers.QuantDepthwiseConv2D`` + tfcompress quantizer aliases + TF-MOT pruning."""


@_register
@resolve_quantizers(lq.layers.QuantSeparableConv2D)
class QuantSeparableConv2D(_Prunable, lq.layers.QuantSeparableConv2D):
    """``larq.layers.QuantSeparableConv2D`` + tfcompress quantizer aliases + TF-MOT pruning."""
