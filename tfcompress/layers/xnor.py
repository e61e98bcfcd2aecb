"""XNOR-Net layers (Rastegari et al., ECCV 2016, arXiv 1603.05279): binary weights scaled by
``alpha_c = mean|W_c|`` per output filter (the paper's gradient, see
:class:`~tfcompress.quantizers.XNORWeight`), ``ste_sign`` inputs, and the activation scale
``K`` = mean over channels of ``|I|``, box-filtered over each receptive field (exactly
``1/(kh kw)`` per tap, so borders follow the padding), multiplied into the output.

``input_scaling=False`` gives the BWN/larq-zoo variant without ``K`` (most later work drops
it because the following BatchNorm absorbs per-channel scale).
"""

import larq as lq

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import QuantConv2D, QuantDense, add_param as _add_param, resolve_quantizers

_BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "xnor_weight",
           "kernel_constraint": "weight_clip"}


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults=_BINARY)
class XNORConv2D(QuantConv2D):
    """XNOR-Net convolution; Conv2D's signature with XNOR defaults, plus ``input_scaling``."""

    def __init__(self, *args, input_scaling=True, **kwargs):
        self.input_scaling = bool(input_scaling)
        lq.layers.QuantConv2D.__init__(self, *args, **kwargs)

    def call(self, inputs):
        outputs = super().call(inputs)
        if not self.input_scaling:
            return outputs
        kh, kw = self.kernel_size
        mean_abs = tf.reduce_mean(tf.abs(inputs), axis=-1, keepdims=True)
        box = tf.fill((kh, kw, 1, 1), 1.0 / (kh * kw))
        k = tf.nn.conv2d(mean_abs, box, strides=self.strides, padding=self.padding.upper(),
                         dilations=self.dilation_rate)
        return outputs * k

    def get_config(self):
        return {**super().get_config(), "input_scaling": self.input_scaling}


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantDense, defaults=_BINARY)
class XNORDense(QuantDense):
    """XNOR-Net dense layer: ``K`` is the mean ``|x|`` of each example."""

    def __init__(self, *args, input_scaling=True, **kwargs):
        self.input_scaling = bool(input_scaling)
        lq.layers.QuantDense.__init__(self, *args, **kwargs)

    def call(self, inputs):
        outputs = super().call(inputs)
        if not self.input_scaling:
            return outputs
        return outputs * tf.reduce_mean(tf.abs(inputs), axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "input_scaling": self.input_scaling}


_add_param(XNORConv2D, "input_scaling", True)
_add_param(XNORDense, "input_scaling", True)
