"""Multi-bit quantizers: uniform (symmetric/affine, per-tensor/per-channel), power-of-two,
PACT, LSQ and LSQ+. All are fake-quantizers: float in, float on the quantization grid out,
with straight-through gradients, so a model trains with ``model.fit`` and 8-bit models convert
to int8 TFLite (lower bit widths are simulated; TFLite stores them as int8).
"""

import larq as lq

from tfcompress._distribute import across_replicas, replica_invariant
from tfcompress._keras import keras, tf
from tfcompress.quantizers.base import (
    BaseQuantizer, check_bits, check_positive, grad_scale, register, round_ste,
)


def integer_range(bits, signed, narrow_range=False):
    """``(q_min, q_max)`` of a ``bits``-bit integer grid."""
    if signed:
        return (-(2 ** (bits - 1)) + (1 if narrow_range else 0), 2 ** (bits - 1) - 1)
    return (0, 2 ** bits - 1 - (1 if narrow_range else 0))


@register
class Uniform(BaseQuantizer):
    r"""Uniform fake quantization with a range taken from the current tensor (weights) or an
    exponential moving average of batch ranges (activations, ``ema_decay`` set).

    - symmetric: ``S = max|r| / q_max``, zero point 0, grid ``[-q_max, q_max]`` with
      ``narrow_range`` (else ``[-2^{b-1}, 2^{b-1}-1]``);
    - affine (``symmetric=False``): ``S = (r_max - r_min)/(q_max - q_min)``,
      ``Z = round(q_min - r_min/S)``, the range nudged so that 0 is exactly representable.

    Output ``S (clip(round(r/S) + Z, q_min, q_max) - Z)``; gradient 1 inside the range and 0
    outside (STE). ``per_channel`` uses one range per slice of ``axis``.
    """

    def __init__(self, bits=8, symmetric=True, narrow_range=False, per_channel=False, axis=-1,
                 ema_decay=None, **kwargs):
        self.bits = check_bits(bits, low=2)
        if not isinstance(symmetric, bool) or not isinstance(narrow_range, bool):
            raise ValueError("symmetric and narrow_range must be True or False.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay!r}.")
        self.symmetric = symmetric
        self.narrow_range = narrow_range
        self.ema_decay = ema_decay
        super().__init__(per_channel=per_channel, axis=axis, **kwargs)

    @property
    def precision(self):
        return self.bits

    def build(self, input_shape):
        if self.per_channel:
            self.channel_axis(input_shape)
        if self.ema_decay is not None:
            shape = self.param_shape(input_shape)
            self.range_min = self.add_weight(name="range_min", shape=shape, trainable=False,
                                             initializer="zeros")
            self.range_max = self.add_weight(name="range_max", shape=shape, trainable=False,
                                             initializer="zeros")
            self.add_init_flag()
        super().build(input_shape)

    def _range(self, inputs, training):
        axes = self.reduce_axes(inputs.shape)
        lo = tf.stop_gradient(tf.reduce_min(inputs, axis=axes, keepdims=True))
        hi = tf.stop_gradient(tf.reduce_max(inputs, axis=axes, keepdims=True))
        if self.ema_decay is None:
            return lo, hi
        lo, hi = tf.reshape(lo, self.range_min.shape), tf.reshape(hi, self.range_max.shape)
        if (training is None or not isinstance(training, (bool, int)) or training) \
                and not replica_invariant(inputs):
            # the EMA is updated every training step: with the global batch's range on every
            # replica (a no-op outside a multi-replica strategy)
            lo, hi = across_replicas(lo, "min"), across_replicas(hi, "max")
        init = self.lazy_init([(self.range_min, lo), (self.range_max, hi)], training)
        d = self.ema_decay

        def update():
            a = self.range_min.assign(d * self.range_min + (1 - d) * lo)
            b = self.range_max.assign(d * self.range_max + (1 - d) * hi)
            return tf.identity(a), tf.identity(b)

        def read():
            return tf.identity(self.range_min), tf.identity(self.range_max)

        with tf.control_dependencies(init):
            if training is None:
                training = keras.backend.learning_phase()
            return tf.__internal__.smart_cond.smart_cond(training, update, read)

    def call(self, inputs, training=None):
        lo, hi = self._range(inputs, training)
        if self.symmetric:
            q_min, q_max = integer_range(self.bits, True, self.narrow_range)
            scale = tf.maximum(tf.maximum(-lo, hi), 1e-8) / q_max
            zero = 0.0
        else:
            q_min, q_max = integer_range(self.bits, False, self.narrow_range)
            lo = tf.minimum(lo, 0.0)
            hi = tf.maximum(hi, 0.0)
            scale = tf.maximum(hi - lo, 1e-8) / (q_max - q_min)
            zero = tf.clip_by_value(tf.round(q_min - lo / scale), q_min, q_max)
        x = inputs / scale + zero
        q = round_ste(tf.clip_by_value(x, float(q_min), float(q_max)))
        return (q - zero) * scale

    def integer_grid(self, tensor=None):
        """The :class:`~tfcompress.quantizers.grid.IntegerGrid` this quantizer rounds to.

        With ``ema_decay`` the grid comes from the stored range (static, what inference uses);
        without it the range is that of ``tensor`` (weights), which must then be given.
        """
        from tfcompress.quantizers.grid import IntegerGrid

        if self.ema_decay is not None:
            if not self.built:
                raise ValueError(f"{self.name}: the quantizer is not built (call it once first).")
            lo, hi = tf.identity(self.range_min), tf.identity(self.range_max)
        else:
            if tensor is None:
                raise ValueError(
                    f"{self.name}: Uniform without ema_decay takes its range from each tensor it "
                    "quantizes, so its grid changes from batch to batch; pass the tensor "
                    "(weights), or set ema_decay for activations.")
            tensor = tf.convert_to_tensor(tensor, tf.float32)
            axes = self.reduce_axes(tensor.shape)
            lo = tf.reduce_min(tensor, axis=axes, keepdims=True)
            hi = tf.reduce_max(tensor, axis=axes, keepdims=True)
        if self.symmetric:
            q_min, q_max = integer_range(self.bits, True, self.narrow_range)
            scale = tf.maximum(tf.maximum(-lo, hi), 1e-8) / q_max
            zero = tf.zeros_like(scale)
        else:
            q_min, q_max = integer_range(self.bits, False, self.narrow_range)
            lo, hi = tf.minimum(lo, 0.0), tf.maximum(hi, 0.0)
            scale = tf.maximum(hi - lo, 1e-8) / (q_max - q_min)
            zero = tf.clip_by_value(tf.round(q_min - lo / scale), q_min, q_max)
        kind = f"Uniform {self.bits}-bit {'symmetric' if self.symmetric else 'affine'}"
        return IntegerGrid(self.bits, scale.numpy(), zero.numpy(), q_min, q_max,
                           static=self.ema_decay is not None, kind=kind)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "symmetric": self.symmetric,
                "narrow_range": self.narrow_range, "ema_decay": self.ema_decay}


@register
class PowerOfTwo(BaseQuantizer):
    r"""Non-uniform (logarithmic) quantization to signed powers of two and zero:
    ``q(x) = sign(x) 2^{clip(round(log2|x|), e_min, e_max)}``, values below ``2^{e_min - 1/2}``
    to 0. ``e_max = round(log2 max|x|)`` of the current tensor and ``bits`` give
    ``2^{b-1} - 1`` exponents (``e_min = e_max - 2^{b-1} + 2``): ``2^b - 1`` levels in all.
    Gradient: identity for ``|x| <= 2^{e_max}`` (STE), 0 beyond. TFLite has no kernel for
    this; it is a simulation (multiplications become bit shifts on custom hardware).
    """

    def __init__(self, bits=4, per_channel=False, axis=-1, **kwargs):
        self.bits = check_bits(bits, low=2)
        super().__init__(per_channel=per_channel, axis=axis, **kwargs)

    @property
    def precision(self):
        return self.bits

    def call(self, inputs):
        axes = self.reduce_axes(inputs.shape)
        top = tf.stop_gradient(tf.reduce_max(tf.abs(inputs), axis=axes, keepdims=True))
        e_max = tf.round(tf.math.log(tf.maximum(top, 1e-30)) / tf.math.log(2.0))
        e_min = e_max - (2 ** (self.bits - 1) - 2)
        mag = tf.abs(inputs)
        e = tf.clip_by_value(tf.round(tf.math.log(tf.maximum(mag, 1e-30)) / tf.math.log(2.0)),
                             e_min, e_max)
        value = tf.sign(inputs) * tf.pow(2.0, e)
        value = tf.where(mag < tf.pow(2.0, e_min - 0.5), tf.zeros_like(inputs), value)
        clipped = tf.clip_by_value(inputs, -tf.pow(2.0, e_max), tf.pow(2.0, e_max))
        return clipped + tf.stop_gradient(value - clipped)

    def integer_grid(self, tensor=None):
        """Grid of ``tensor``'s powers of two: ``scale = 2^{e_min}``, integers ``0`` and
        ``+-2^i`` for ``i < 2^{b-1} - 1`` (the largest exponent comes from the tensor)."""
        from tfcompress.quantizers.grid import IntegerGrid

        if tensor is None:
            raise ValueError(
                f"{self.name}: PowerOfTwo takes its largest exponent from each tensor it "
                "quantizes, so its grid changes from batch to batch; pass the tensor (weights).")
        tensor = tf.convert_to_tensor(tensor, tf.float32)
        top = tf.reduce_max(tf.abs(tensor), axis=self.reduce_axes(tensor.shape), keepdims=True)
        e_max = tf.round(tf.math.log(tf.maximum(top, 1e-30)) / tf.math.log(2.0))
        n_exp = 2 ** (self.bits - 1) - 1
        scale = tf.pow(2.0, e_max - (n_exp - 1)).numpy().astype("float64")
        mags = [2 ** i for i in range(n_exp)]
        levels = tuple(sorted([0] + mags + [-m for m in mags]))
        return IntegerGrid(self.bits, scale, 0.0, -mags[-1], mags[-1], levels=levels,
                           static=False, kind=f"PowerOfTwo {self.bits}-bit")

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@register
class PACT(BaseQuantizer):
    r"""PACT activation quantizer (Choi et al. 2018, arXiv 1805.06085): a learned clip level
    ``alpha`` (init 10), ``y = clip(x, 0, alpha)``, ``y_q = round(y (2^k - 1)/alpha) alpha/(2^k-1)``.

    Gradients: ``dy_q/dx = 1{0 <= x < alpha}``, ``dy_q/dalpha = 1{x >= alpha}`` (STE through
    the rounding); an L2 penalty ``l2 alpha^2`` is added to the model losses.
    """

    def __init__(self, bits=4, init=10.0, l2=1e-4, **kwargs):
        self.bits = check_bits(bits)
        self.init = check_positive(init, "init")
        if not isinstance(l2, (int, float)) or l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}.")
        self.l2 = float(l2)
        super().__init__(**kwargs)

    @property
    def precision(self):
        return self.bits

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(),
                                     initializer=keras.initializers.Constant(self.init),
                                     constraint=lambda v: tf.maximum(v, 1e-3))
        super().build(input_shape)

    def call(self, inputs):
        if self.l2:
            self.add_loss(self.l2 * tf.square(self.alpha))
        levels = 2.0 ** self.bits - 1
        y = tf.minimum(tf.nn.relu(inputs), self.alpha)
        scale = self.alpha / levels
        q = round_ste(y / tf.stop_gradient(scale)) * tf.stop_gradient(scale)
        # STE w.r.t. alpha: value of q, gradient of y (1 where x >= alpha).
        return y + tf.stop_gradient(q - y)

    def integer_grid(self, tensor=None):
        """``scale = alpha / (2^k - 1)``, zero point 0, integers ``[0, 2^k - 1]`` (static)."""
        from tfcompress.quantizers.grid import IntegerGrid

        if not self.built:
            raise ValueError(f"{self.name}: the quantizer is not built (call it once first).")
        levels = 2 ** self.bits - 1
        scale = (self.alpha / (2.0 ** self.bits - 1)).numpy()
        return IntegerGrid(self.bits, scale, 0.0, 0, levels, kind=f"PACT {self.bits}-bit")

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "init": self.init, "l2": self.l2}


@register
class LSQ(BaseQuantizer):
    r"""Learned Step Size Quantization (Esser et al., ICLR 2020, arXiv 1902.08153).

    ``v_hat = round(clip(v/s, -Q_N, Q_P)) s`` with ``Q_N = 2^{b-1}``, ``Q_P = 2^{b-1}-1``
    (signed, weights) or ``Q_N = 0``, ``Q_P = 2^b - 1`` (unsigned, e.g. post-ReLU). Gradients:
    ``dv_hat/dv = 1`` inside the range, 0 outside; ``dv_hat/ds = -v/s + round(v/s)`` inside,
    ``-Q_N`` / ``+Q_P`` at the clip points, times the scale ``g = 1/sqrt(N Q_P)`` with ``N``
    the number of weights (weights) or of activations per example (``N_F``, the paper's
    definition; the batch axis is excluded). ``s`` is initialized on the first call to
    ``2 mean|v| / sqrt(Q_P)`` and kept positive. Exclude ``step`` from weight decay.

    At inference (``training=False``) 8-bit LSQ runs as a ``FakeQuant`` op with
    ``min = -Q_N s``, ``max = Q_P s`` (the same grid), so the TFLite converter exports the layer
    as real int8 with exactly these ranges. Below 8 bits the rounding formula stays in the
    graph (TFLite has no sub-8-bit FakeQuant): weights fold to constants that TFLite stores as
    int8; quantized activations are calibrated like any other int8 tensor.
    """

    def __init__(self, bits=4, signed=True, per_channel=False, axis=-1, **kwargs):
        self.bits = check_bits(bits, low=2)
        if not isinstance(signed, bool):
            raise ValueError(f"signed must be True or False, got {signed!r}.")
        self.signed = signed
        super().__init__(per_channel=per_channel, axis=axis, **kwargs)

    @property
    def precision(self):
        return self.bits

    @property
    def q_range(self):
        if self.signed:
            return 2.0 ** (self.bits - 1), 2.0 ** (self.bits - 1) - 1
        return 0.0, 2.0 ** self.bits - 1

    def build(self, input_shape):
        self.step = self.add_weight(name="step", shape=self.param_shape(input_shape),
                                    initializer="ones", constraint=lambda v: tf.maximum(v, 1e-6))
        self.add_init_flag()
        super().build(input_shape)

    def _count(self, inputs):
        """N of the gradient scale: all elements for weights (no batch axis), per example else."""
        shape = inputs.shape
        if shape.rank and shape[0] is None:
            dims = shape[1:]
        else:
            dims = shape
        n = 1
        for d in dims:
            n *= int(d) if d is not None else 1
        if self.per_channel:
            axis = self.channel_axis(shape)
            n //= int(shape[axis])
        return max(n, 1)

    def call(self, inputs, training=None):
        q_n, q_p = self.q_range
        axes = self.reduce_axes(inputs.shape)
        mean_abs = self.init_statistic(tf.reduce_mean(tf.abs(inputs), axis=axes, keepdims=True),
                                       "mean", training, inputs)
        init_value = 2.0 * mean_abs / (q_p ** 0.5)
        init = self.lazy_init([(self.step, tf.reshape(tf.maximum(init_value, 1e-6), self.step.shape))],
                              training)
        with tf.control_dependencies(init):
            step = tf.identity(self.step)

        def train():
            g = 1.0 / (self._count(inputs) * q_p) ** 0.5
            s = grad_scale(step, g)
            return round_ste(tf.clip_by_value(inputs / s, -q_n, q_p)) * s

        if self.bits != 8 or (self.per_channel and self.channel_axis(inputs.shape) != len(inputs.shape) - 1):
            return train()

        def infer():
            # The same grid as a FakeQuant op, which the TFLite converter reads as int8
            # ranges: scale (max - min)/(2^b - 1) = s and zero point Q_N, so only exact
            # .5 ties may round differently.
            lo, hi = tf.reshape(-q_n * step, [-1]), tf.reshape(q_p * step, [-1])
            if self.per_channel:
                return tf.quantization.fake_quant_with_min_max_vars_per_channel(
                    inputs, lo, hi, num_bits=self.bits)
            return tf.quantization.fake_quant_with_min_max_vars(
                inputs, lo[0], hi[0], num_bits=self.bits)

        if training is None:
            training = keras.backend.learning_phase()
        return tf.__internal__.smart_cond.smart_cond(training, train, infer)

    def integer_grid(self, tensor=None):
        """``scale = s`` (the learned step), integers ``[-Q_N, Q_P]``; LSQ+ adds the zero
        point ``-beta / s`` of its learned offset (static)."""
        from tfcompress.quantizers.grid import IntegerGrid

        if not self.built:
            raise ValueError(f"{self.name}: the quantizer is not built (call it once first).")
        q_n, q_p = self.q_range
        step = self.step.numpy().astype("float64")
        offset = getattr(self, "offset", None)
        zero = 0.0 if offset is None else -offset.numpy().astype("float64") / step
        kind = f"{type(self).__name__} {self.bits}-bit{'' if self.signed else ' unsigned'}"
        return IntegerGrid(self.bits, step, zero, -int(q_n), int(q_p), kind=kind)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "signed": self.signed}


@register
class LSQPlus(LSQ):
    r"""LSQ+ (Bhalgat et al., CVPRW 2020, arXiv 2004.09576): LSQ with a learnable offset
    ``beta`` for activations that can be negative:
    ``x_hat = round(clip((x - beta)/s, n, p)) s + beta``. ``dx_hat/dbeta = 0`` inside the
    range and 1 outside; ``s`` as in LSQ. Initialized on the first call from min/max:
    ``s = (max - min)/(2^b - 1)``, ``beta = min - n s`` (unsigned grid ``n = 0`` by default).
    Unlike LSQ it has no FakeQuant inference form (the offset breaks TFLite's zero-point
    nudging), so it is a training-time simulation.
    """

    def __init__(self, bits=4, signed=False, **kwargs):
        super().__init__(bits=bits, signed=signed, **kwargs)

    def build(self, input_shape):
        self.offset = self.add_weight(name="offset", shape=self.param_shape(input_shape),
                                      initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None):
        q_n, q_p = self.q_range
        axes = self.reduce_axes(inputs.shape)
        lo = self.init_statistic(tf.reduce_min(inputs, axis=axes, keepdims=True), "min",
                                 training, inputs)
        hi = self.init_statistic(tf.reduce_max(inputs, axis=axes, keepdims=True), "max",
                                 training, inputs)
        s0 = tf.maximum((hi - lo) / (q_p + q_n), 1e-6)
        beta0 = lo + q_n * s0
        init = self.lazy_init([(self.step, tf.reshape(s0, self.step.shape)),
                               (self.offset, tf.reshape(beta0, self.offset.shape))], training)
        with tf.control_dependencies(init):
            step, beta = tf.identity(self.step), tf.identity(self.offset)
        g = 1.0 / (self._count(inputs) * q_p) ** 0.5
        s = grad_scale(step, g)
        b = grad_scale(beta, g)
        return round_ste(tf.clip_by_value((inputs - b) / s, -q_n, q_p)) * s + b


def dorefa(**kwargs):
    """larq's ``DoReFa`` (Zhou et al. 2016): ``k_bit`` (default 2), ``mode`` activations|weights."""
    return lq.quantizers.DoReFa(**kwargs)
