"""Binary quantizers: sign in the forward pass, a chosen gradient approximation backward.

larq already ships ``SteSign`` (BNN), ``ApproxSign`` (Bi-Real), ``SwishSign`` (BNN+) and
``MagnitudeAwareSign`` (Bi-Real weights); tfcompress uses those classes as they are and adds
the methods of the book that larq lacks:

- :class:`TanhSign`: generic tanh surrogate ``g(x) = k t (1 - tanh^2(t x))``.
- :class:`EDESign` + :class:`EDESchedule`: IR-Net's error-decay estimator, with ``t`` and
  ``k`` as variables driven by a callback (Qin et al., CVPR 2020, arXiv 1909.10788).
- :class:`XNORWeight`: XNOR-Net weights ``alpha_c sign(W_c)`` with the paper's gradient
  ``alpha_c 1{|W| <= 1} + 1/n`` (Rastegari et al., ECCV 2016, arXiv 1603.05279).
- :class:`StateAwareSign`: SA-BNN weights ``{-tau-_c, +tau+_c}`` with state-aware gradients
  (Liu et al., AAAI 2021). The equations are the method card's reconstruction (the paper's
  exact equations were not available): forward ``tau_{s(w)} sign(w)``, backward
  ``dL/dw = dL/dw_hat * tau_{s(w)} * 1{|w| <= 1}``.
- :class:`RSign`: ReActNet's sign with a learnable per-channel threshold and the ApproxSign
  gradient (Liu et al., ECCV 2020, arXiv 2003.03488).
"""

import math

import larq as lq

from tfcompress._keras import keras, tf
from tfcompress.quantizers.base import BaseQuantizer, check_positive, hard_sign, register


def tanh_sign(x, t=1.0, k=1.0):
    """sign(x) forward; ``k t (1 - tanh(t x)^2)`` backward. ``t``/``k`` may be tensors."""

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            return dy * k * t * (1.0 - tf.square(tf.tanh(t * x)))

        return hard_sign(x), grad

    return _call(x)


@register
class TanhSign(BaseQuantizer):
    r"""Binary quantizer with the tanh-based gradient ``g(x) = k t (1 - tanh^2(t x))``.

    Args:
        t: slope of the tanh surrogate (larger = closer to the true sign).
        k: gradient multiplier.

    >>> q = TanhSign(t=2.0)
    >>> q(tf.constant([-0.3, 0.0, 0.4])).numpy().tolist()
    [-1.0, 1.0, 1.0]
    """

    precision = 1

    def __init__(self, t=1.0, k=1.0, **kwargs):
        self.t = check_positive(t, "t")
        self.k = check_positive(k, "k")
        super().__init__(**kwargs)

    def call(self, inputs):
        return tanh_sign(inputs, self.t, self.k)

    def get_config(self):
        return {**super().get_config(), "t": self.t, "k": self.k}


@register
class EDESign(BaseQuantizer):
    r"""IR-Net's error-decay estimator: sign forward, ``k t (1 - tanh^2(t x))`` backward.

    ``t`` and ``k`` are non-trainable variables (saved with the model) so that
    :class:`EDESchedule` can change them between epochs without retracing:
    ``t = T_min 10^{(i/N) log10(T_max/T_min)}``, ``k = max(1/t, 1)``. Early in training the
    estimator is close to the identity, late in training close to the sign.
    """

    precision = 1

    def build(self, input_shape):
        self.t = self.add_weight(name="t", shape=(), trainable=False,
                                 initializer=keras.initializers.Constant(0.1))
        self.k = self.add_weight(name="k", shape=(), trainable=False,
                                 initializer=keras.initializers.Constant(10.0))
        super().build(input_shape)

    def call(self, inputs):
        return tanh_sign(inputs, tf.convert_to_tensor(self.t), tf.convert_to_tensor(self.k))


def ede_values(epoch, epochs, t_min=0.1, t_max=10.0):
    """``(t, k)`` of IR-Net's EDE schedule at ``epoch`` of ``epochs``."""
    t = t_min * 10 ** (epoch / epochs * math.log10(t_max / t_min))
    return t, max(1.0 / t, 1.0)


class EDESchedule(keras.callbacks.Callback):
    """Sets ``t`` and ``k`` of every :class:`EDESign` in the model at each epoch's start.

    Args:
        epochs: total number of training epochs ``N``.
        t_min, t_max: schedule ends. The paper gives 0.1 and 10; the released CIFAR trainer
            uses 1e-3 and 10.

    Raises ``ValueError`` at the start of training if the model has no EDESign quantizer.
    """

    def __init__(self, epochs, t_min=0.1, t_max=10.0):
        super().__init__()
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
        self.epochs = epochs
        self.t_min = check_positive(t_min, "t_min")
        self.t_max = check_positive(t_max, "t_max")
        if self.t_max <= self.t_min:
            raise ValueError(f"t_max ({t_max}) must exceed t_min ({t_min}).")

    def _quantizers(self):
        from tfcompress.inspection import iter_layers

        found = []
        for layer in iter_layers(self.model):
            for q in (getattr(layer, "input_quantizer", None), getattr(layer, "kernel_quantizer", None)):
                if isinstance(q, EDESign):
                    found.append(q)
            if isinstance(layer, EDESign):
                found.append(layer)
        return found

    def on_train_begin(self, logs=None):
        self._targets = self._quantizers()
        if not self._targets:
            raise ValueError("EDESchedule: the model has no EDESign quantizer to schedule.")

    def on_epoch_begin(self, epoch, logs=None):
        t, k = ede_values(epoch, self.epochs, self.t_min, self.t_max)
        for q in self._targets:
            q.t.assign(t)
            q.k.assign(k)


@tf.custom_gradient
def _xnor_weight(w, alpha, n):
    def grad(dy):
        inside = tf.cast(tf.abs(w) <= 1.0, w.dtype)
        return dy * (alpha * inside + 1.0 / n), None, None

    return alpha * hard_sign(w), grad


@register
class XNORWeight(BaseQuantizer):
    r"""XNOR-Net / BWN weight binarization: ``W_hat_c = alpha_c sign(W_c)``,
    ``alpha_c = ||W_c||_1 / n`` per output channel (last axis), ``n`` = weights per channel.

    Backward (the paper's rule): ``dL/dW = dL/dW_hat (alpha 1{|W| <= 1} + 1/n)``.
    """

    precision = 1

    def call(self, inputs):
        axes = list(range(len(inputs.shape) - 1))
        alpha = tf.reduce_mean(tf.abs(inputs), axis=axes, keepdims=True)
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), inputs.dtype)
        return _xnor_weight(inputs, tf.stop_gradient(alpha), n)


@register
class StateAwareSign(BaseQuantizer):
    r"""SA-BNN weight quantizer with separate learned magnitudes for the two states.

    Forward: ``w_hat = tau+_c 1{w >= 0} - tau-_c 1{w < 0}`` per output channel ``c`` (last
    axis). Backward: ``dL/dw = dL/dw_hat tau_{s(w)} 1{|w| <= 1}``,
    ``dL/dtau+_c = sum_{w >= 0} dL/dw_hat``, ``dL/dtau-_c = -sum_{w < 0} dL/dw_hat``.

    This is the method card's reconstruction of SA-BNN (the paper's equations were not
    available): the claim it targets is fewer sign flips of latent weights near zero; track it
    with larq's ``flip_ratio`` metric. Both tau start at ``init`` and are kept >= ``floor`` so
    neither state collapses.
    """

    precision = 1

    def __init__(self, init=1.0, floor=1e-3, clip_value=1.0, **kwargs):
        self.init = check_positive(init, "init")
        self.floor = check_positive(floor, "floor")
        self.clip_value = check_positive(clip_value, "clip_value")
        super().__init__(**kwargs)

    def build(self, input_shape):
        c = input_shape[-1]
        floor = self.floor
        constraint = keras.constraints.get(lambda v: tf.maximum(v, floor))
        self.tau_pos = self.add_weight(name="tau_pos", shape=(c,), constraint=constraint,
                                       initializer=keras.initializers.Constant(self.init))
        self.tau_neg = self.add_weight(name="tau_neg", shape=(c,), constraint=constraint,
                                       initializer=keras.initializers.Constant(self.init))
        super().build(input_shape)

    def call(self, inputs):
        pos = tf.stop_gradient(tf.cast(inputs >= 0, inputs.dtype))
        tau = pos * self.tau_pos + (1.0 - pos) * self.tau_neg
        return tau * lq.quantizers.ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "init": self.init, "floor": self.floor,
                "clip_value": self.clip_value}


@register
class RSign(BaseQuantizer):
    r"""ReActNet's RSign: ``+1 if x_c >= alpha_c else -1`` with a learnable per-channel
    threshold ``alpha`` (init 0) and the ApproxSign gradient
    ``max(0, 2 - 2|x - alpha|)`` (so ``dL/dalpha_c = -sum dL/dy g(x - alpha)``).

    Use it as the ``input_quantizer`` of a binary convolution (LCE then still sees a sign
    feeding the convolution), or as a standalone layer.
    """

    precision = 1

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(input_shape[-1],),
                                     initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return lq.quantizers.approx_sign(inputs - self.alpha)
