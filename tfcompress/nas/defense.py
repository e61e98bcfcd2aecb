"""ABanditNAS's defensive operations (card B1): a Gabor filter and a feature-denoising block.

ABanditNAS (Chen et al., ECCV 2020) searches a space of 9 ops per edge that adds two defensive
operations to the DARTS ops: a **3x3 Gabor filter** and a **denoising block**. The card gives
only their names and "non-local-means style denoising wrapped by 1x1 conv + identity
shortcut"; the forms below follow, where the card is silent, the ABanditNAS code archive
(``models/filter.py``, ``models/darts_ops_1.py``: ops ``gab_filt_3x3`` and ``dtp_blok_3x3``)
and the feature-denoising paper the block comes from (Xie, Wu, van der Maaten, Yuille, He,
CVPR 2019, arXiv 1812.03411). **Reconstruction (🟡)**: the exact ABanditNAS blocks were not
verified against the paper's text.

Gabor filter (:func:`gabor_kernel`, :class:`GaborConv2D`). A depthwise ``k x k`` convolution
whose kernel for channel ``c`` is generated from 5 learnable numbers (card: "a depthwise conv
whose kernel is generated from learnable (sigma, theta, lambda, psi, gamma)"), with ``x`` the
column and ``y`` the row offset from the kernel centre::

    x' =  x cos(theta) + y sin(theta)
    y' = -x sin(theta) + y cos(theta)
    g(x, y) = exp(-(x'^2 + gamma^2 y'^2) / (2 sigma^2)) * cos(2 pi x' / lambda + psi)

The parameters are kept in the archive's ranges: ``theta = 2 pi sigmoid(t)``,
``sigma = 0.1 + 0.4 sigmoid(s)``, ``lambda = 0.001 + 0.999 sigmoid(l)``, ``psi`` free,
``gamma = 1 + 0.5 g`` (initialized as there: ``t, s ~ N(0, 1)``, ``l ~ U(0, 1)``,
``psi ~ N(0, 0.02^2)``, ``g = 0``). The op ``gabor_3x3`` is the archive's ``GFilter``: Gabor
filter -> 1x1 conv -> BN, plus the identity (stride 1) or a 1x1 stride-2 conv -> BN shortcut.
(The archive's ``gab_filt_3x3`` uses a full convolution with the same Gabor kernel for every
input channel; this is the card's depthwise form.)

Denoising block (:class:`NonLocalMeans`, op ``denoising_block``). Xie et al.'s block:
``y = x + BN(conv1x1(NLM(x)))`` with the non-local mean over all positions ``j`` of the map

    gaussian (default):  NLM(x)_i = sum_j softmax_j(x_i . x_j / sqrt(C)) x_j
    dot:                 NLM(x)_i = (1 / N) sum_j (x_i . x_j) x_j,      N = H W

(no embedding, as in Xie et al.'s default). The BN's scale starts at 0 in derived models
(Xie et al., and the archive), so the block starts as the identity. With stride 2 the block's
output is subsampled (every second row and column; the archive resizes bilinearly).

Both ops are real-valued: ABanditNAS searches full-precision networks (card: larq not
applicable); a binary space refuses them.
"""

import math

import numpy as np

from tfcompress._keras import keras, tf

DEFENSIVE_OPS = ("gabor_3x3", "denoising_block")
NLM_MODES = ("gaussian", "dot")


def gabor_kernel(size, sigma, theta, lambd, psi, gamma):
    """Gabor kernels ``(size, size, C)``, one per channel (module docstring formula).

    Args:
        size: odd kernel side.
        sigma, theta, lambd, psi, gamma: ``(C,)`` tensors (Gaussian width, orientation,
            wavelength, phase, aspect ratio).

    Returns:
        ``kernel[i, j, c] = g_c(x = j - size // 2, y = i - size // 2)``.

    >>> k = gabor_kernel(3, *[tf.constant([v]) for v in (1.0, 0.0, 2.0, 0.0, 1.0)])
    >>> [round(float(v), 4) for v in k[1, :, 0]]      # middle row: exp(-x^2 / 2) cos(pi x)
    [-0.6065, 1.0, -0.6065]
    """
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"gabor_kernel: size must be a positive odd int, got {size!r}.")
    sigma, theta, lambd, psi, gamma = (tf.convert_to_tensor(v) for v in (sigma, theta, lambd, psi, gamma))
    dtype = sigma.dtype
    r = size // 2
    offsets = tf.range(-r, r + 1, dtype=dtype)
    y = offsets[:, None, None]                       # row offset
    x = offsets[None, :, None]                       # column offset
    xr = x * tf.cos(theta) + y * tf.sin(theta)
    yr = -x * tf.sin(theta) + y * tf.cos(theta)
    envelope = tf.exp(-(tf.square(xr) + tf.square(gamma) * tf.square(yr)) / (2.0 * tf.square(sigma)))
    return envelope * tf.cos(2.0 * math.pi * xr / lambd + psi)


@keras.utils.register_keras_serializable(package="tfcompress")
class GaborConv2D(keras.layers.Layer):
    """Depthwise convolution with learnable Gabor kernels (ABanditNAS' Gabor filter).

    Args:
        kernel_size: odd kernel side (3 in ABanditNAS).
        strides: 1 or 2.
        padding: ``"same"`` or ``"valid"``.

    Weights (one per channel, raw values mapped to the archive's ranges, module docstring):
    ``theta``, ``sigma``, ``lambda``, ``psi``, ``gamma``.
    """

    def __init__(self, kernel_size=3, strides=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"GaborConv2D: kernel_size must be a positive odd int, got {kernel_size!r}.")
        if strides not in (1, 2):
            raise ValueError(f"GaborConv2D: strides must be 1 or 2, got {strides!r}.")
        if padding not in ("same", "valid"):
            raise ValueError(f"GaborConv2D: padding must be 'same' or 'valid', got {padding!r}.")
        self.kernel_size, self.strides, self.padding = int(kernel_size), int(strides), padding

    def build(self, input_shape):
        c = int(input_shape[-1])
        normal = keras.initializers.RandomNormal
        self.theta_raw = self.add_weight(name="theta", shape=(c,), initializer=normal(stddev=1.0))
        self.sigma_raw = self.add_weight(name="sigma", shape=(c,), initializer=normal(stddev=1.0))
        self.lambda_raw = self.add_weight(name="lambda", shape=(c,),
                                          initializer=keras.initializers.RandomUniform(0.0, 1.0))
        self.psi = self.add_weight(name="psi", shape=(c,), initializer=normal(stddev=0.02))
        self.gamma_raw = self.add_weight(name="gamma", shape=(c,), initializer="zeros")
        super().build(input_shape)

    def parameters(self):
        """``(sigma, theta, lambda, psi, gamma)`` in their ranges, as tensors."""
        theta = 2.0 * math.pi * tf.sigmoid(self.theta_raw)
        sigma = 0.1 + 0.4 * tf.sigmoid(self.sigma_raw)
        lambd = 0.001 + 0.999 * tf.sigmoid(self.lambda_raw)
        gamma = 1.0 + 0.5 * self.gamma_raw
        return sigma, theta, lambd, tf.convert_to_tensor(self.psi), gamma

    def kernel(self):
        """The current depthwise kernel ``(k, k, C, 1)``."""
        return gabor_kernel(self.kernel_size, *self.parameters())[..., None]

    def call(self, x):
        s = self.strides
        return tf.nn.depthwise_conv2d(x, tf.cast(self.kernel(), x.dtype), [1, s, s, 1],
                                      self.padding.upper())

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for i in (1, 2):
            if shape[i] is not None:
                n = shape[i] if self.padding == "same" else shape[i] - self.kernel_size + 1
                shape[i] = -(-n // self.strides)
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding}


@keras.utils.register_keras_serializable(package="tfcompress")
class NonLocalMeans(keras.layers.Layer):
    """The non-local mean of Xie et al.'s denoising block over all positions of the map
    (module docstring): ``mode="gaussian"`` (softmax weights) or ``"dot"``.

    >>> x = tf.constant([[[[1.0], [0.0]]]])            # (1, 1, 2, 1): two positions
    >>> NonLocalMeans("dot")(x).numpy().ravel().tolist()   # (1/2) sum_j (x_i x_j) x_j
    [0.5, 0.0]
    """

    def __init__(self, mode="gaussian", **kwargs):
        super().__init__(**kwargs)
        if mode not in NLM_MODES:
            raise ValueError(f"NonLocalMeans: mode must be one of {NLM_MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, x):
        shape = tf.shape(x)
        c = x.shape[-1]
        flat = tf.reshape(x, [shape[0], -1, c])                       # (N, HW, C)
        f = tf.matmul(flat, flat, transpose_b=True)                   # (N, HW, HW): x_i . x_j
        if self.mode == "gaussian":
            f = tf.nn.softmax(f / math.sqrt(c), axis=-1)
        else:
            f = f / tf.cast(tf.shape(flat)[1], x.dtype)
        return tf.reshape(tf.matmul(f, flat), shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class Residual:
    """A recipe step: ``merge(body(x), shortcut(x))`` with ``shortcut`` empty = identity, and an
    optional subsampling after (``steps`` are Keras layers applied in order)."""

    def __init__(self, body, shortcut, add, after=()):
        self.body, self.shortcut, self.add, self.after = list(body), list(shortcut), add, list(after)

    @property
    def layers(self):
        return self.body + self.shortcut + [self.add] + self.after

    def __call__(self, x):
        y = x
        for layer in self.body:
            y = layer(y)
        s = x
        for layer in self.shortcut:
            s = layer(s)
        out = self.add([y, s])
        for layer in self.after:
            out = layer(out)
        return out


def defensive_steps(name, channels, stride, *, affine, momentum, prefix, bn):
    """The recipe of a defensive op (``gabor_3x3`` or ``denoising_block``) for
    :func:`tfcompress.nas.ops.op_steps`; ``bn(affine, momentum, name, **kw)`` makes the BNs."""
    if name == "gabor_3x3":
        body = [GaborConv2D(3, strides=stride, name=f"{prefix}_gabor"),
                keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_pw"),
                bn(affine, momentum, f"{prefix}_bn")]
        shortcut = [] if stride == 1 else [
            keras.layers.Conv2D(channels, 1, strides=2, use_bias=False, name=f"{prefix}_short_conv"),
            bn(affine, momentum, f"{prefix}_short_bn")]
        return [Residual(body, shortcut, keras.layers.Add(name=f"{prefix}_add"))]
    if name == "denoising_block":
        body = [NonLocalMeans("gaussian", name=f"{prefix}_nlm"),
                keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_pw"),
                bn(affine, momentum, f"{prefix}_bn", gamma_initializer="zeros")]
        after = [keras.layers.MaxPooling2D(1, strides=2, name=f"{prefix}_subsample")] if stride == 2 else []
        return [Residual(body, [], keras.layers.Add(name=f"{prefix}_add"), after)]
    raise ValueError(f"{name!r} is not a defensive op; they are {DEFENSIVE_OPS}.")


__all__ = ["DEFENSIVE_OPS", "GaborConv2D", "NonLocalMeans", "defensive_steps", "gabor_kernel"]
