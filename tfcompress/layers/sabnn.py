"""SA-BNN convolution (Liu, Chen, Zhuang, Shen, Zhang, Ding; AAAI 2021).

Implements the method card's reconstruction (the paper's exact equations were not available):
binary weights take per-output-channel state-dependent values ``{-tau-_c, +tau+_c}`` and the
latent weights get state-aware gradients ``dL/dw = dL/dw_hat tau_{s(w)} 1{|w| <= 1}`` (the
two states have different step sizes, which the paper claims suppresses frequent flips of
weights near zero; measure it with larq's ``flip_ratio`` metric). Inputs are binarized with
the ApproxSign gradient.

The layer computes the deployable affine form directly,

    conv(x_b, w_hat) = a_c conv(x_b, sign(w)) + b_c conv(x_b, 1),
    a = (tau+ + tau-)/2,  b = (tau+ - tau-)/2,

so both convolutions are binary (the second, with an all-ones kernel, is the popcount of the
receptive field) and Larq Compute Engine converts both to ``LceBconv2d``. The popcount conv has
``filters`` output channels (not 1) to avoid an LCE 0.16 converter fault, so the layer costs
twice the binary operations of a plain binary convolution.
The sign of ``w`` carries a custom gradient ``tau_{s(w)}/a 1{|w| <= 1}`` so the product with
``a`` gives exactly the state-aware gradient above; ``tau`` gets its gradient through ``a`` and
``b`` (``dw_hat/dtau+ = 1{w >= 0}``, ``dw_hat/dtau- = -1{w < 0}``).
"""

import larq as lq

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import (
    QuantConv2D, add_param as _add_param, bias_and_activation, binary_kernel_precisions, pad_same,
    resolve_quantizers,
)


@tf.custom_gradient
def _state_sign(w, g_pos, g_neg):
    def grad(dy):
        inside = tf.cast(tf.abs(w) <= 1.0, w.dtype)
        coef = tf.where(w >= 0, g_pos, g_neg)
        return dy * coef * inside, None, None

    return lq.math.sign(w), grad


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults={
    "input_quantizer": "approx_sign", "kernel_quantizer": None, "kernel_constraint": "weight_clip",
    "use_bias": False, "pad_values": 1.0})
class SAConv2D(QuantConv2D):
    """State-aware binary convolution; Conv2D's signature (``kernel_quantizer`` must stay None:
    the state-aware binarization is built in). ``tau_init`` and ``tau_floor`` set the initial
    value and lower bound of both state magnitudes."""

    def __init__(self, *args, tau_init=1.0, tau_floor=1e-3, **kwargs):
        if kwargs.get("kernel_quantizer") is not None:
            raise ValueError("SAConv2D binarizes its kernel itself; leave kernel_quantizer=None.")
        if kwargs.get("groups", 1) != 1:
            raise ValueError("SAConv2D supports groups=1 only.")
        self.tau_init = float(tau_init)
        self.tau_floor = float(tau_floor)
        if not self.tau_init > 0 or not self.tau_floor > 0:
            raise ValueError("tau_init and tau_floor must be positive.")
        lq.layers.QuantConv2D.__init__(self, *args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        floor = self.tau_floor
        kw = dict(shape=(self.filters,), initializer=keras.initializers.Constant(self.tau_init),
                  constraint=lambda v: tf.maximum(v, floor))
        self.tau_pos = self.add_weight(name="tau_pos", **kw)
        self.tau_neg = self.add_weight(name="tau_neg", **kw)

    def call(self, inputs):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        if self.padding == "same" and self.pad_values != 0.0:
            # larq-style constant padding so the binary input stays +-1 at the border.
            x = pad_same(x, self.kernel_size, self.strides, self.dilation_rate, self.pad_values)
            padding = "VALID"
        else:
            padding = self.padding.upper()
        a = (self.tau_pos + self.tau_neg) / 2.0
        b = (self.tau_pos - self.tau_neg) / 2.0
        sw_ = _state_sign(self.kernel, self.tau_pos / a, self.tau_neg / a)
        kh, kw = self.kernel_size
        # One output channel would do for the popcount, but LCE 0.16's converter then fuses the
        # per-channel multiply into a 1-channel LceBconv2d and the file fails to load; with
        # `filters` channels (twice the binary MACs) it converts and matches.
        ones = tf.ones((kh, kw, x.shape[-1], self.filters), x.dtype)
        conv = lambda k: tf.nn.conv2d(x, k, strides=self.strides, padding=padding,  # noqa: E731
                                      dilations=self.dilation_rate)
        outputs = conv(a * sw_) + b * conv(ones)
        return bias_and_activation(self, outputs)

    def tfcompress_precisions(self):
        return binary_kernel_precisions(self.input_quantizer)

    def effective_kernel(self):
        """``w_hat = tau_{s(w)} sign(w)``, the binary-valued kernel the layer applies."""
        pos = tf.cast(self.kernel >= 0, self.kernel.dtype)
        return pos * self.tau_pos - (1.0 - pos) * self.tau_neg

    def get_config(self):
        return {**super().get_config(), "tau_init": self.tau_init, "tau_floor": self.tau_floor}


_add_param(SAConv2D, "tau_init", 1.0)
_add_param(SAConv2D, "tau_floor", 1e-3)
