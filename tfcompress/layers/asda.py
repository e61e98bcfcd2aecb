"""ASDA: amplitude suppression and direction activation (Xu et al., EMDL'20 workshop,
doi 10.1145/3410338.3412340), as the method card 6.3 reconstructs it.

**Reconstruction [A/D].** Only the abstract was available: each kernel is split into a
*direction* (its sign, the binary kernel) and an *amplitude* shared by the full-precision and
binary kernels, and a simple loss suppresses that amplitude. The equations below are the card's
proposal, implemented as written:

    W_hat = a * sign(W)                        a: per-output-channel amplitude (learned)
    L_AS  = lambda * sum (W - a * sign(W))^2 + rho * sum a^2

- ``a`` is a trainable weight initialized to ``mean|W_c|`` (XNOR's optimum) and kept above
  ``1e-4``; it gets its gradient through ``W_hat`` (``sum dL/dW_hat * sign(W)``) and ``L_AS``.
- The latent ``W`` gets ``dL/dW_hat * a * 1{|W| <= 1}`` (STE through the sign) plus
  ``2 lambda (W - a sign(W))`` from ``L_AS`` (the sign is treated as a constant direction),
  which pulls ``|W|`` toward the shared amplitude; ``rho`` suppresses the amplitude itself.
- Direction activation: the binary activation takes its sign from the *real* pre-activation
  (the real-valued residual stream, before any clipping), with the ApproxSign gradient
  ``max(0, 2 - 2|x|)``. This is the card's reading of "direction activation" [D].

``L_AS`` is registered with ``add_loss`` (it depends on weights only), so ``model.fit`` adds it
to the training loss and ``model.losses`` lists it. The kernel is binary up to a per-channel
constant, so LCE fuses ``a`` into ``LceBconv2d``'s multiplier.
"""

import inspect

import larq as lq

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import (
    QuantConv2D, add_param as _add_param, bias_and_activation, binary_kernel_precisions, pad_same,
    resolve_quantizers,
)

__all__ = ["ASDAConv2D"]

_FLOOR = 1e-4
_QUANT_CONV_SIGNATURE = inspect.signature(lq.layers.QuantConv2D.__init__)


def _nonnegative(value, name):
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return value


@keras.utils.register_keras_serializable(package="tfcompress")
@resolve_quantizers(lq.layers.QuantConv2D, defaults={
    "input_quantizer": "approx_sign", "kernel_quantizer": None,
    "kernel_constraint": "weight_clip", "use_bias": False, "pad_values": 1.0})
class ASDAConv2D(QuantConv2D):
    """Binary convolution ``conv(sign(x), a * sign(W))`` with the amplitude-suppression loss
    (card 6.3, see the module docstring). Conv2D's signature (``kernel_quantizer`` must stay
    None: the kernel binarization is built in), plus ``suppression`` (lambda) and
    ``amplitude_decay`` (rho)."""

    def __init__(self, *args, suppression=1e-4, amplitude_decay=1e-4, **kwargs):
        # the signature decorator passes larq's arguments positionally: bind them to check
        given = _QUANT_CONV_SIGNATURE.bind(self, *args, **kwargs).arguments
        if given.get("kernel_quantizer") is not None:
            raise ValueError("ASDAConv2D binarizes its kernel itself (a * sign(W)); leave "
                             "kernel_quantizer=None.")
        if given.get("groups", 1) != 1:
            raise ValueError("ASDAConv2D supports groups=1 only.")
        self.suppression = _nonnegative(suppression, "suppression")
        self.amplitude_decay = _nonnegative(amplitude_decay, "amplitude_decay")
        lq.layers.QuantConv2D.__init__(self, *args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        kernel = self.kernel
        self.amplitude = self.add_weight(
            name="amplitude", shape=(self.filters,),
            initializer=lambda shape, dtype=None: tf.reduce_mean(tf.abs(kernel), axis=[0, 1, 2]),
            constraint=lambda v: tf.maximum(v, _FLOOR))
        self.add_loss(self.suppression_loss)

    def suppression_loss(self):
        """``L_AS = lambda sum (W - a sign(W))^2 + rho sum a^2``."""
        direction = tf.stop_gradient(lq.math.sign(self.kernel))
        fit = tf.reduce_sum(tf.square(self.kernel - self.amplitude * direction))
        return self.suppression * fit + self.amplitude_decay * tf.reduce_sum(tf.square(self.amplitude))

    def binary_kernel(self):
        """``a * sign(W)`` with the straight-through gradient ``1{|W| <= 1}`` for ``W``."""
        return self.amplitude * lq.quantizers.ste_sign(self.kernel)

    def call(self, inputs):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        padding = self.padding.upper()
        if self.padding == "same" and self.pad_values != 0.0:
            x = pad_same(x, self.kernel_size, self.strides, self.dilation_rate, self.pad_values)
            padding = "VALID"
        outputs = tf.nn.conv2d(x, self.binary_kernel(), strides=self.strides, padding=padding,
                               dilations=self.dilation_rate)
        return bias_and_activation(self, outputs)

    def tfcompress_precisions(self):
        return binary_kernel_precisions(self.input_quantizer)

    def get_config(self):
        return {**super().get_config(), "suppression": self.suppression,
                "amplitude_decay": self.amplitude_decay}


_add_param(ASDAConv2D, "suppression", 1e-4)
_add_param(ASDAConv2D, "amplitude_decay", 1e-4)
