"""The DARTS operations, in a float and a binarized version, as plain Keras layers.

Each operation is a recipe (:func:`op_steps`) that returns the layers it is made of; the
supernet wraps the recipe in an :class:`OpLayer`, and :func:`apply_steps` applies the same
recipe to a functional tensor when a derived model is built, so a derived model is a flat
graph of standard Keras and tfcompress layers (serializable, summarizable, LCE-convertible).

The 8 DARTS operations (Liu, Simonyan, Yang, ICLR 2019, arXiv 1806.09055) and ABanditNAS' two
defensive ones:

================ ========================================== ===========================================
name             float (DARTS code)                         binary (BNAS / CP-NAS, book ch. 3)
================ ========================================== ===========================================
none             zeros (stride-subsampled)                  same
skip_connect     identity; FactorizedReduce when stride 2   identity; binary FactorizedReduce
max_pool_3x3     3x3 max pool                               same
avg_pool_3x3     3x3 average pool (padding excluded)        same
sep_conv_kxk     (ReLU, dw kxk, pw 1x1, BN) x 2             binary dw kxk -> BN -> binary 1x1 -> BN
dil_conv_kxk     ReLU, dw kxk dilation 2, pw 1x1, BN        binary kxk conv, dilation 2 -> BN
gabor_3x3        Gabor dw 3x3, pw 1x1, BN, + shortcut       (float only; ABanditNAS)
denoising_block  x + BN(pw 1x1(non-local mean(x)))          (float only; ABanditNAS)
================ ========================================== ===========================================

The last two are ABanditNAS' defensive ops (:mod:`tfcompress.nas.defense`; op names
``gabor_3x3`` and ``denoising_block``); they are not in the default :data:`PRIMITIVES` (the 8
DARTS ops) but in :data:`ABANDIT_PRIMITIVES`, ABanditNAS' 9 ops.

Binary convolutions are :class:`tfcompress.layers.QuantConv2D` /
:class:`~tfcompress.layers.QuantDepthwiseConv2D` with ``ste_sign`` input and kernel quantizers
and the ``weight_clip`` constraint (BNN, Courbariaux et al. 2016, arXiv 1602.02830): the sign
of the input is the non-linearity, so the binary ops have no ReLU; "same" padding pads the
binarized input with +1 (``pad_values=1``, LCE's native padding). Keras does not allow
``strides > 1`` together with ``dilation_rate > 1``, so a stride-2 dilated conv runs at stride 1
and is then subsampled by a 1x1, stride-2 max pool; this equals PyTorch's stride-2 dilated conv
with symmetric padding, which DARTS uses.
"""

from tfcompress._keras import keras, tf
from tfcompress.layers import QuantConv2D, QuantDepthwiseConv2D
from tfcompress.nas.defense import DEFENSIVE_OPS, defensive_steps

PRIMITIVES = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# every op a space may use: the DARTS ops and ABanditNAS' defensive ops (float only)
ALL_OPS = PRIMITIVES + DEFENSIVE_OPS
# ABanditNAS' 9 ops per edge (card B1): no 'none', plus the Gabor filter and the denoising block
ABANDIT_PRIMITIVES = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                      "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5") + DEFENSIVE_OPS
ALIASES = {"zero": "none", "identity": "skip_connect", "gab_filt_3x3": "gabor_3x3",
           "dtp_blok_3x3": "denoising_block"}
KINDS = ("float", "binary")
WEIGHT_FREE = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")

# pad_values=1: "same" padding with +1 keeps the padded input binary. It is LCE's fast path and
# avoids an LCE 0.16 error: with zero padding, a binary conv whose (dilated) kernel is larger
# than its input (e.g. dil_conv_5x5 on an 8x8 map) converts with wrong border values.
_BINARY = dict(input_quantizer="ste_sign", use_bias=False, pad_values=1.0)


def canonical_op(name):
    """The canonical name of an operation (``"zero"`` -> ``"none"``); ValueError if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"Operation names are strings, got {name!r}.")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in ALL_OPS:
        raise ValueError(f"Unknown operation {name!r}; valid operations: {', '.join(ALL_OPS)} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())}).")
    return key


def _bn(affine, momentum, name, **kwargs):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, center=affine,
                                           scale=affine, name=name, **kwargs)


def _bconv(filters, k, name, strides=1, dilation=1, padding="same"):
    cls = DilatedQuantConv2D if dilation > 1 else QuantConv2D
    return cls(filters, k, strides=strides, dilation_rate=dilation, padding=padding,
               kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name=name, **_BINARY)


@keras.utils.register_keras_serializable(package="tfcompress")
class DilatedQuantConv2D(QuantConv2D):
    """:class:`tfcompress.layers.QuantConv2D` whose dilated convolution is one native
    ``Conv2D`` op with ``dilations`` (Keras emits SpaceToBatch -> Conv2D -> BatchToSpace).

    Same maths and weights. The reason is conversion: when two dilated convolutions with the
    same kernel size read the same tensor (common in a DARTS cell), the TFLite converter shares
    their SpaceToBatch, cannot fold it back into a dilated conv, and LCE then leaves both as
    float ``CONV_2D`` on +-1 values instead of ``LceBconv2d``.
    """

    def convolution_op(self, inputs, kernel):
        padding = self.padding.upper() if isinstance(self.padding, str) else self.padding
        return tf.nn.conv2d(inputs, kernel, strides=list(self.strides), padding=padding,
                            dilations=list(self.dilation_rate))


def _bdw(k, strides, name):
    return QuantDepthwiseConv2D(k, strides=strides, padding="same", depthwise_quantizer="ste_sign",
                                depthwise_constraint="weight_clip", name=name, **_BINARY)


class Factorized:
    """FactorizedReduce (DARTS): two 1x1 stride-2 convolutions, the second on the input shifted
    by one pixel, concatenated, then BN. ``binary``: binary 1x1 convs and no ReLU."""

    def __init__(self, channels, binary, affine, momentum, name):
        if channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {channels}.")
        half = channels // 2
        self.relu = None if binary else keras.layers.ReLU(name=f"{name}_relu")
        self.crop = keras.layers.Cropping2D(((1, 0), (1, 0)), name=f"{name}_shift")
        if binary:
            self.conv_a = _bconv(half, 1, f"{name}_conv_a", strides=2, padding="valid")
            self.conv_b = _bconv(half, 1, f"{name}_conv_b", strides=2, padding="valid")
        else:
            self.conv_a = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name=f"{name}_conv_a")
            self.conv_b = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name=f"{name}_conv_b")
        self.concat = keras.layers.Concatenate(name=f"{name}_concat")
        self.bn = _bn(affine, momentum, f"{name}_bn")

    @property
    def layers(self):
        return [lay for lay in (self.relu, self.crop, self.conv_a, self.conv_b, self.concat, self.bn)
                if lay is not None]

    def __call__(self, x):
        if self.relu is not None:
            x = self.relu(x)
        a = self.conv_a(x)
        b = self.conv_b(self.crop(x))
        return self.bn(self.concat([a, b]))


class Zero:
    """The ``none`` operation: zeros with the output shape (stride-subsampled input)."""

    def __init__(self, stride, channels):
        self.stride, self.channels = stride, channels
        self.layers = []

    def __call__(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        return tf.zeros_like(x[..., :1]) * tf.zeros((self.channels,), x.dtype)


def preprocess_steps(channels, kind, affine=True, momentum=0.9, name="pre", reduce=False):
    """ReLU-Conv1x1-BN (float) or binary 1x1 conv-BN that brings a cell input to ``channels``;
    ``reduce=True`` gives FactorizedReduce (the input came from before a reduction cell)."""
    if reduce:
        return [Factorized(channels, kind == "binary", affine, momentum, name)]
    if kind == "binary":
        return [_bconv(channels, 1, f"{name}_conv"), _bn(affine, momentum, f"{name}_bn")]
    return [keras.layers.ReLU(name=f"{name}_relu"),
            keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_conv"),
            _bn(affine, momentum, f"{name}_bn")]


def op_steps(name, channels, stride, kind, *, affine=True, momentum=0.9, prefix="op",
             search=False):
    """The layers (in order) of operation ``name`` with ``channels`` outputs.

    Args:
        name: one of :data:`PRIMITIVES` (or an alias).
        channels: output channels (equal to the input channels, as in DARTS).
        stride: 1 (normal cell) or 2 (edges from the inputs of a reduction cell).
        kind: ``"float"`` or ``"binary"``.
        affine: learnable BN scale/offset (DARTS search uses ``affine=False``).
        momentum: BN momentum (Keras convention).
        prefix: layer name prefix.
        search: add DARTS' non-affine BN after the pooling ops (supernet only).

    Returns:
        a list of steps; each is a Keras layer, a :class:`Factorized` or a :class:`Zero`. An
        empty list is the identity.
    """
    name = canonical_op(name)
    if kind not in KINDS:
        raise ValueError(f"Unknown operation kind {kind!r}; choose one of {KINDS}.")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}.")
    binary = kind == "binary"
    p = f"{prefix}_{name}"
    if name in DEFENSIVE_OPS:
        if binary:
            raise ValueError(f"The defensive op {name!r} (ABanditNAS) is real-valued; use it in a "
                             "float space (DartsSpace(ops='float')).")
        return defensive_steps(name, channels, stride, affine=affine, momentum=momentum,
                               prefix=p, bn=_bn)
    if name == "none":
        return [Zero(stride, channels)]
    if name == "skip_connect":
        return [] if stride == 1 else [Factorized(channels, binary, affine, momentum, p)]
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = keras.layers.MaxPooling2D if name.startswith("max") else keras.layers.AveragePooling2D
        steps = [pool(3, strides=stride, padding="same", name=p)]
        if search:
            steps.append(_bn(False, momentum, f"{p}_bn"))
        return steps
    k = int(name[-1])
    if name.startswith("sep_conv"):
        if binary:
            return [_bdw(k, stride, f"{p}_dw"), _bn(affine, momentum, f"{p}_bn1"),
                    _bconv(channels, 1, f"{p}_pw"), _bn(affine, momentum, f"{p}_bn2")]
        steps = []
        for i, s in ((1, stride), (2, 1)):
            steps += [keras.layers.ReLU(name=f"{p}_relu{i}"),
                      keras.layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False,
                                                   name=f"{p}_dw{i}"),
                      keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{p}_pw{i}"),
                      _bn(affine, momentum, f"{p}_bn{i}")]
        return steps
    # dil_conv_kxk
    sub = ([keras.layers.MaxPooling2D(1, strides=2, name=f"{p}_subsample")] if stride == 2 else [])
    if binary:
        return [_bconv(channels, k, f"{p}_conv", dilation=2)] + sub + [_bn(affine, momentum, f"{p}_bn")]
    return ([keras.layers.ReLU(name=f"{p}_relu"),
             keras.layers.DepthwiseConv2D(k, dilation_rate=2, padding="same", use_bias=False,
                                          name=f"{p}_dw")] + sub +
            [keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{p}_pw"),
             _bn(affine, momentum, f"{p}_bn")])


def apply_steps(steps, x):
    """Apply a recipe from :func:`op_steps` / :func:`preprocess_steps` to ``x``."""
    for step in steps:
        x = step(x)
    return x


def step_layers(steps):
    """The Keras layers inside a recipe (for tracking by a containing layer)."""
    out = []
    for step in steps:
        out += [step] if isinstance(step, keras.layers.Layer) else list(step.layers)
    return out


class OpLayer(keras.layers.Layer):
    """One operation of the supernet: applies its recipe's layers in order."""

    def __init__(self, steps, op_name, **kwargs):
        super().__init__(**kwargs)
        self.op_name = op_name
        self._steps = steps
        self.step_layers = step_layers(steps)    # tracked by Keras (weights, BN updates)

    def call(self, x):
        return apply_steps(self._steps, x)


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle (PC-DARTS): ``(.., g, c/g) -> (.., c/g, g)`` on the last axis.

    Channel ``i * (c / g) + j`` moves to position ``j * g + i`` (the PyTorch
    ``view(b, g, c/g, h, w).transpose(1, 2)`` of PC-DARTS, in NHWC).
    """
    c = x.shape[-1]
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups.")
    shape = tf.shape(x)
    y = tf.reshape(x, tf.concat([shape[:-1], [groups, c // groups]], 0))
    rank = len(x.shape)
    perm = list(range(rank - 1)) + [rank, rank - 1]
    y = tf.transpose(y, perm)
    return tf.reshape(y, shape)
