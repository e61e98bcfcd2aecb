"""ReActNet pieces (Liu, Shen, Savvides, Cheng; ECCV 2020, arXiv 2003.03488) and the Bi-Real
block (Liu et al., ECCV 2018, arXiv 1808.00278).

``RSign`` (learnable per-channel sign threshold, ApproxSign gradient) lives in
:mod:`tfcompress.quantizers` so it can be a binary conv's ``input_quantizer``; it is
re-exported from :mod:`tfcompress.layers` and also works as a standalone layer.
"""

from tfcompress._keras import keras, tf
from tfcompress.layers.quant import QuantConv2D


@keras.utils.register_keras_serializable(package="tfcompress")
class LearnableBias(keras.layers.Layer):
    """``y = x + b_c`` with a learnable per-channel bias (init 0): ReActNet's shift layers."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.bias


@keras.utils.register_keras_serializable(package="tfcompress")
class RPReLU(keras.layers.Layer):
    r"""ReActNet's RPReLU: ``y = (x - gamma_c) + zeta_c`` if ``x > gamma_c`` else
    ``beta_c (x - gamma_c) + zeta_c``; gamma, zeta init 0, beta (PReLU slope) init 0.25.
    Keep these parameters out of weight decay, as the official code does."""

    def __init__(self, slope_init=0.25, **kwargs):
        super().__init__(**kwargs)
        self.slope_init = float(slope_init)

    def build(self, input_shape):
        c = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="zeros")
        self.zeta = self.add_weight(name="zeta", shape=(c,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(c,),
                                    initializer=keras.initializers.Constant(self.slope_init))
        super().build(input_shape)

    def call(self, inputs):
        y = inputs - self.gamma
        return tf.where(y > 0, y, self.beta * y) + self.zeta

    def get_config(self):
        return {**super().get_config(), "slope_init": self.slope_init}


def bireal_block(x, filters, strides=1, *, input_quantizer="approx_sign",
                 kernel_quantizer="magnitude_aware_sign", momentum=0.9, name=None):
    """One Bi-Real block: ``y = BN(BinaryConv3x3(sign(x))) + shortcut(x)``.

    The shortcut is real-valued: identity, or at a change of shape AvgPool(2, stride 2) ->
    real 1x1 conv -> BN (as the official code and larq-zoo). No ReLU after the addition: the
    next sign needs the negative values. Binary input padding uses ``pad_values=1`` so the
    convolution sees only +-1 (and LCE needs no padding correction).
    """
    prefix = f"{name}_" if name else ""
    sc = x
    if strides != 1 or x.shape[-1] != filters:
        if strides != 1:
            sc = keras.layers.AveragePooling2D(2, strides=strides, padding="same",
                                               name=prefix + "sc_pool" if name else None)(sc)
        sc = keras.layers.Conv2D(filters, 1, use_bias=False, name=prefix + "sc_conv" if name else None)(sc)
        sc = keras.layers.BatchNormalization(momentum=momentum,
                                             name=prefix + "sc_bn" if name else None)(sc)
    y = QuantConv2D(filters, 3, strides=strides, padding="same", pad_values=1.0, use_bias=False,
                    input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                    kernel_constraint="weight_clip", name=prefix + "bconv" if name else None)(x)
    y = keras.layers.BatchNormalization(momentum=momentum, name=prefix + "bn" if name else None)(y)
    return keras.layers.Add(name=prefix + "add" if name else None)([y, sc])
