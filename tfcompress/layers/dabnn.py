"""DA-BNN: data-adaptive binary convolutions (Zhao et al.), as the method card 6.2 proposes.

**Design proposal [D].** The card found no primary text; it reconstructs DA-BNN from a one-line
description, and this module implements that reconstruction, not a verified reproduction.
XNOR-style BNNs rescale a binary convolution with *fixed* weight-derived factors; DA-BNN
computes the amplitudes from the *current input* ``A`` (the real tensor before the sign):

    O = BinConv(sign(A), sign(W)) * alpha_ch(A) * beta_sp(A)
    alpha_ch = sigmoid(W2 ReLU(W1 GAP(|A|) + b1) + b2)       shape (N, 1, 1, C_out)
    beta_sp  = sigmoid(conv_{kh x kw}(mean_c |A|) + b)        shape (N, H_out, W_out, 1)

``alpha_ch`` is a squeeze-and-excitation branch on ``|A|`` with ``hidden = max(C_out //
reduction, 4)`` units; ``beta_sp`` is XNOR-Net's ``K`` map with a learned filter (one
kh x kw kernel with the convolution's own strides, padding and dilation, so the map matches
the output; initialized to XNOR's box filter ``1/(kh kw)``). Both branches are real-valued and
trained by ordinary autodiff; the signs use the STE (``ste_sign`` for inputs and weights, as
the card's larq mapping says).

Deployment: the binary convolution becomes ``LceBconv2d``; the data-dependent amplitudes stay
separate float ops (LCE can only fuse constant per-channel multipliers), which is the card's
stated cost.
"""

import larq as lq

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import QuantConv2D, add_param as _add_param, resolve_quantizers

__all__ = ["DAConv2D"]


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults={
    "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
    "kernel_constraint": "weight_clip", "use_bias": False, "pad_values": 1.0})
class DAConv2D(QuantConv2D):
    """Binary convolution with data-adaptive channel and spatial amplitudes (card 6.2, [D]).

    Conv2D's signature with binary defaults, plus ``reduction`` (squeeze ratio of the channel
    branch). The amplitudes multiply the layer's output (after bias/activation, if any).
    """

    def __init__(self, *args, reduction=16, **kwargs):
        self.reduction = _positive_int(reduction, "reduction")
        lq.layers.QuantConv2D.__init__(self, *args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        c_in = int(input_shape[-1])
        hidden = max(self.filters // self.reduction, 4)
        kh, kw = self.kernel_size
        self.se_kernel1 = self.add_weight(name="se_kernel1", shape=(c_in, hidden),
                                          initializer="glorot_uniform")
        self.se_bias1 = self.add_weight(name="se_bias1", shape=(hidden,), initializer="zeros")
        self.se_kernel2 = self.add_weight(name="se_kernel2", shape=(hidden, self.filters),
                                          initializer="glorot_uniform")
        self.se_bias2 = self.add_weight(name="se_bias2", shape=(self.filters,), initializer="zeros")
        self.spatial_kernel = self.add_weight(
            name="spatial_kernel", shape=(kh, kw, 1, 1),
            initializer=keras.initializers.Constant(1.0 / (kh * kw)))
        self.spatial_bias = self.add_weight(name="spatial_bias", shape=(1,), initializer="zeros")

    def amplitudes(self, inputs):
        """``(alpha_ch, beta_sp)`` for the real input ``inputs``."""
        a = tf.abs(inputs)
        g = tf.reduce_mean(a, axis=[1, 2])
        h = tf.nn.relu(tf.matmul(g, self.se_kernel1) + self.se_bias1)
        alpha = tf.sigmoid(tf.matmul(h, self.se_kernel2) + self.se_bias2)[:, None, None, :]
        m = tf.reduce_mean(a, axis=-1, keepdims=True)
        beta = tf.sigmoid(tf.nn.conv2d(m, self.spatial_kernel, strides=self.strides,
                                       padding=self.padding.upper(),
                                       dilations=self.dilation_rate) + self.spatial_bias)
        return alpha, beta

    def call(self, inputs):
        alpha, beta = self.amplitudes(inputs)
        return super().call(inputs) * alpha * beta

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


_add_param(DAConv2D, "reduction", 16)
