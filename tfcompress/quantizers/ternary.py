"""Ternary Residual Quantization (TRQ; Li, Ding, Liu, Zhang, Guo, AAAI 2021).

The equations are the method card's reconstruction from the abstract and a figure caption
(the paper's own equations were not available): with one scale ``alpha > 0``

    R_0 = W,  R_i = R_{i-1} - alpha sign(R_{i-1}),  Q_n = alpha * sum_{i=0}^{n} sign(R_i)

``n = 1`` (one residual) is the ternary quantizer ``{-2 alpha, 0, +2 alpha}``: ``2 alpha
sign(W)`` where ``|W| > alpha``, else 0. ``n`` residuals give ``n + 2`` uniformly spaced levels
(spacing ``2 alpha``). Each sign has the straight-through gradient ``1{|R_i| <= clip}``;
``alpha`` is learned by autodiff through ``Q`` and initialized on the first call to
``0.7 mean|W| / 2`` (so the first threshold matches TWN's ``0.7 mean|W|``), and kept above
``floor`` so it cannot collapse.
"""

import math

import larq as lq

from tfcompress._keras import tf
from tfcompress.quantizers.base import BaseQuantizer, check_bits, check_positive, register


@register
class TRQ(BaseQuantizer):
    """Ternary residual quantizer with ``residuals`` residual levels (1 = ternary).

    Args:
        residuals: number of residual binarizations ``n`` (1..14); ``n + 2`` levels.
        per_channel: one ``alpha`` per channel of ``axis`` (default: one per tensor).
        clip_value: STE clip of each sign.
        floor: lower bound of ``alpha``.
    """

    def __init__(self, residuals=1, per_channel=False, axis=-1, clip_value=1.0, floor=1e-4,
                 **kwargs):
        self.residuals = check_bits(residuals, "residuals", 1, 14)
        self.clip_value = check_positive(clip_value, "clip_value")
        self.floor = check_positive(floor, "floor")
        super().__init__(per_channel=per_channel, axis=axis, **kwargs)

    @property
    def precision(self):
        return math.ceil(math.log2(self.residuals + 2))

    def build(self, input_shape):
        floor = self.floor
        self.alpha = self.add_weight(
            name="alpha", shape=self.param_shape(input_shape), initializer="ones",
            constraint=lambda v: tf.maximum(v, floor))
        self.add_init_flag()
        super().build(input_shape)

    def call(self, inputs, training=None):
        mean_abs = self.init_statistic(
            tf.reduce_mean(tf.abs(inputs), axis=self.reduce_axes(inputs.shape), keepdims=True),
            "mean", training, inputs)
        init = self.lazy_init([(self.alpha, tf.reshape(0.35 * mean_abs, self.alpha.shape))], training)
        with tf.control_dependencies(init):
            alpha = tf.identity(self.alpha)
        residual = inputs
        total = tf.zeros_like(inputs)
        for _ in range(self.residuals + 1):
            s = lq.quantizers.ste_sign(residual, clip_value=self.clip_value)
            total += s
            residual = residual - alpha * s
        return alpha * total

    def integer_grid(self, tensor=None):
        """``alpha`` times a sum of ``n + 1`` signs: with ``n + 1`` even the integers
        ``[-(n+1)/2, (n+1)/2]`` at scale ``2 alpha`` (ternary: ``{-1, 0, 1}``), else the odd
        integers of ``[-(n+1), n+1]`` at scale ``alpha`` (static: ``alpha`` is learned)."""
        from tfcompress.quantizers.grid import IntegerGrid

        if not self.built:
            raise ValueError(f"{self.name}: the quantizer is not built (call it once first).")
        alpha = self.alpha.numpy().astype("float64")
        signs = self.residuals + 1
        kind = f"TRQ ({self.residuals} residual{'s' if self.residuals > 1 else ''})"
        if signs % 2 == 0:
            half = signs // 2
            return IntegerGrid(self.precision, 2 * alpha, 0.0, -half, half, kind=kind)
        levels = tuple(range(-signs, signs + 1, 2))
        return IntegerGrid(self.precision, alpha, 0.0, -signs, signs, levels=levels, kind=kind)

    def get_config(self):
        return {**super().get_config(), "residuals": self.residuals,
                "clip_value": self.clip_value, "floor": self.floor}


def ste_tern(**kwargs):
    """larq's ``SteTern`` with the TWN threshold ``0.7 mean|W|`` (Li & Liu 2016) by default."""
    kwargs.setdefault("ternary_weight_networks", True)
    return lq.quantizers.SteTern(**kwargs)


__all__ = ["TRQ", "ste_tern"]
